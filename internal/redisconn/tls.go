package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSOptions configures TLS for rediss:// URLs. All paths name PEM files.
type TLSOptions struct {
	// CAFile holds the certificates that may sign the server's certificate. Empty means the
	// system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and its key, for servers that require
	// one (redis-server's tls-auth-clients, on by default). Both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry. Empty means the host of each
	// address dialed, which is right for one server and stays right when Cluster adds several.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. It exists for tests and emergencies;
	// New logs a warning whenever it is set.
	InsecureSkipVerify bool
}

// isZero reports whether no TLS option is set.
func (o TLSOptions) isZero() bool { return o == TLSOptions{} }

// newTLSConfig builds the client side of a rediss:// connection. Errors name the file that is
// wrong, never its contents: a key file is a secret.
func newTLSConfig(o TLSOptions) (*tls.Config, error) {
	conf := &tls.Config{
		// TLS 1.0 and 1.1 are deprecated (RFC 8996); redis-server 6+ offers 1.2 and 1.3.
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		InsecureSkipVerify: o.InsecureSkipVerify, // Opt-in, and New warns about it.
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			// An *fs.PathError already names the file.
			return nil, fmt.Errorf("redisconn: tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redisconn: tls ca file %s holds no PEM certificate", o.CAFile)
		}
		conf.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			// crypto/tls reports what is wrong with the PEM blocks, never their bytes.
			return nil, fmt.Errorf("redisconn: tls client certificate %s with key %s: %w", o.CertFile, o.KeyFile, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	case o.CertFile != "":
		return nil, errors.New("redisconn: tls cert file is set without a key file")
	case o.KeyFile != "":
		return nil, errors.New("redisconn: tls key file is set without a cert file")
	}
	return conf, nil
}
