//go:build k8s

package kapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the self-made key material of one cluster, as PEM files in its directory
// and as PEM bytes for client configurations.
type pki struct {
	caFile, servingCert, servingKey, saKey string
	caPEM, adminCertPEM, adminKeyPEM       []byte
}

type certified struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

// newPKI makes a CA, the apiserver's serving certificate (127.0.0.1, ::1, localhost and the
// in-cluster names), an admin client certificate in system:masters and a service-account
// signing key, all ECDSA P-256 and valid for a day, and writes them into dir.
func newPKI(dir string) (*pki, error) {
	ca, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "kapi-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}

	serving, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
	}, ca)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}

	admin, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kapi-admin", Organization: []string{"system:masters"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}

	saPEM, err := keyPEM(saKey)
	if err != nil {
		return nil, err
	}

	p := &pki{
		caFile:       filepath.Join(dir, "ca.crt"),
		servingCert:  filepath.Join(dir, "apiserver.crt"),
		servingKey:   filepath.Join(dir, "apiserver.key"),
		saKey:        filepath.Join(dir, "sa.key"),
		caPEM:        ca.certPEM,
		adminCertPEM: admin.certPEM,
		adminKeyPEM:  admin.keyPEM,
	}

	for path, data := range map[string][]byte{
		p.caFile:      ca.certPEM,
		p.servingCert: serving.certPEM,
		p.servingKey:  serving.keyPEM,
		p.saKey:       saPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}

	return p, nil
}

// issue signs template with parent's key, or self-signs it when parent is nil.
func issue(template *x509.Certificate, parent *certified) (*certified, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}

	now := time.Now()
	template.SerialNumber = serial
	template.NotBefore = now.Add(-time.Hour)
	template.NotAfter = now.Add(24 * time.Hour)

	signer, signerCert := key, template
	if parent != nil {
		signer, signerCert = parent.key, parent.cert
	}

	der, err := x509.CreateCertificate(rand.Reader, template, signerCert, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}

	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}

	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}

	return &certified{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  kp,
	}, nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}

	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
