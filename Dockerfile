# syntax=docker/dockerfile:1
# Build: docker build -t extauthz . (make image). The build stage runs the same command as
# `make build`: a static, trimmed binary.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/extauthz ./cmd/extauthz

# distroless static: no shell, no package manager, a nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="extauthz" \
      org.opencontainers.image.description="Shared sessions, API keys and rate limits for Envoy, nginx and Caddy, over Redis"
COPY --from=build /out/extauthz /usr/local/bin/extauthz
USER nonroot:nonroot
EXPOSE 9001 9002 9003
ENTRYPOINT ["/usr/local/bin/extauthz"]
CMD ["serve", "--grpc-addr", "0.0.0.0:9001", "--http-addr", "0.0.0.0:9002", "--admin-addr", "0.0.0.0:9003"]
