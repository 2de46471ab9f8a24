package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a TLS etcd's client: the CA that signed
// the server's and the client's certificates, and the client's pair.
type TLSFiles struct {
	CA, Cert, Key string
}

// StartTLS starts etcd serving its clients over TLS only and requiring a
// client certificate, with a CA, server and client certificates it makes
// under dir.
func StartTLS(dir string) (*Server, TLSFiles, error) {
	pki := filepath.Join(dir, "pki")
	files, server, err := makeCerts(pki)
	if err != nil {
		return nil, TLSFiles{}, err
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, TLSFiles{}, err
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, TLSFiles{}, err
	}
	pool.AppendCertsFromPEM(caPEM)
	tlsc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv, err := start(dir, tlsc, []string{"--cert-file", server.Cert, "--key-file", server.Key,
		"--trusted-ca-file", files.CA, "--client-cert-auth"})
	return srv, files, err
}

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, each signed by the CA, under dir.
func makeCerts(dir string) (client, server TLSFiles, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return client, server, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return client, server, err
	}
	caTmpl := template(1, "etcdtest CA")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid, caTmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return client, server, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return client, server, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := writePEM(caFile, "CERTIFICATE", caDER); err != nil {
		return client, server, err
	}
	srvTmpl := template(2, "127.0.0.1")
	srvTmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	srvTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if server, err = issue(dir, "server", srvTmpl, ca, caKey); err != nil {
		return client, server, err
	}
	cliTmpl := template(3, "stream-conductor")
	cliTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if client, err = issue(dir, "client", cliTmpl, ca, caKey); err != nil {
		return client, server, err
	}
	client.CA, server.CA = caFile, caFile
	return client, server, nil
}

func template(serial int64, cn string) *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
}

// issue signs tmpl with the CA and writes name.pem and name-key.pem.
func issue(dir, name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (TLSFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := writePEM(f.Cert, "CERTIFICATE", der); err != nil {
		return TLSFiles{}, err
	}
	return f, writePEM(f.Key, "PRIVATE KEY", keyDER)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
