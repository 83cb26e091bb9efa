package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CertFiles names the PEM files of one TLS identity and of the CA that signed it.
type CertFiles struct {
	CAFile, CertFile, KeyFile string
}

// TLSServer is a redis-server that accepts TLS on TLSPort. Its plain port stays open too, so
// that readiness, Do and Restart work exactly as for Start.
type TLSServer struct {
	*Server
	// TLSPort is the loopback port that speaks TLS.
	TLSPort int
	// Client is a certificate the server accepts (redis-server asks for one by default), with
	// the CA that signed both it and the server's certificate.
	Client CertFiles
}

// TLSAddr is host:port of the TLS listener.
func (s *TLSServer) TLSAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TLSPort))
}

// TLSURL is a rediss:// URL for database 0 of the TLS listener.
func (s *TLSServer) TLSURL() string { return "rediss://" + s.TLSAddr() + "/0" }

// StartTLS starts a redis-server like Start that also listens for TLS, with a fresh CA, server
// certificate and client certificate written to the test's temporary directory. The test is
// skipped with a message when redis-server was built without TLS.
func StartTLS(t testing.TB, args ...string) *TLSServer {
	t.Helper()
	if bin := Binary(); bin != "" && !tlsSupported(t, bin) {
		t.Skip("redis-server was built without TLS (no tls-port directive): skipping the TLS test")
	}
	server, client := WriteCerts(t, t.TempDir())
	port := FreePort(t)
	tlsArgs := []string{
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", server.CertFile,
		"--tls-key-file", server.KeyFile,
		"--tls-ca-cert-file", server.CAFile,
	}
	s := Start(t, append(tlsArgs, args...)...)
	return &TLSServer{Server: s, TLSPort: port, Client: client}
}

// tlsSupported asks the binary itself: a TLS build told to listen on neither port exits with
// "Configured to not listen anywhere", while a build without TLS rejects tls-port as a bad
// directive. Either way it exits at once without binding anything.
func tlsSupported(t testing.TB, bin string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no")
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.CombinedOutput()
	return !strings.Contains(string(out), "Bad directive")
}

// WriteCerts writes a new CA into dir with two certificates it signed: one for a server on
// 127.0.0.1 and localhost, and one for a client. Keys are ECDSA P-256, quick to generate.
func WriteCerts(t testing.TB, dir string) (server, client CertFiles) {
	t.Helper()
	caKey, caCert := newCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "redistest CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)

	srvKey, srvCert := newCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, caKey)
	server = CertFiles{
		CAFile:   caFile,
		CertFile: writePEM(t, dir, "server.pem", "CERTIFICATE", srvCert.Raw),
		KeyFile:  writePEM(t, dir, "server-key.pem", "PRIVATE KEY", marshalKey(t, srvKey)),
	}

	cliKey, cliCert := newCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, caKey)
	client = CertFiles{
		CAFile:   caFile,
		CertFile: writePEM(t, dir, "client.pem", "CERTIFICATE", cliCert.Raw),
		KeyFile:  writePEM(t, dir, "client-key.pem", "PRIVATE KEY", marshalKey(t, cliKey)),
	}
	return server, client
}

// newCert creates a key and a certificate from tmpl, signed by parent, or self-signed when
// parent is nil.
func newCert(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("serial number: %v", err)
	}
	tmpl.SerialNumber = serial
	// Backdated a little, so that a clock a few seconds behind does not reject it.
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	return key, cert
}

func marshalKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return der
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}
