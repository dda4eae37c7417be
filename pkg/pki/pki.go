// Package pki owns talos-lb's certificates: the cluster CA, certificates that
// carry a role, and the mutual-TLS configurations built from them.
//
// The role travels in the certificate's Organization ("talos-lb:admin"), the
// way Talos puts "os:admin" in talosconfig certificates, so the CA alone
// decides who may do what. Agents share one server certificate whose DNS name
// is AgentServerName: clients check "is this a talos-lb agent signed by our CA",
// not a per-node address that is unknown when secrets are generated.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Role is what a certificate's holder may do.
type Role string

// Roles, from the most to the least powerful for clients.
const (
	// RoleAgent identifies an agent's server certificate.
	RoleAgent Role = "agent"
	// RoleController may push desired state to agents.
	RoleController Role = "controller"
	// RoleAdmin may read everything and take admin actions.
	RoleAdmin Role = "admin"
	// RoleReader may only read.
	RoleReader Role = "reader"
)

// Roles lists every valid role.
var Roles = []Role{RoleAgent, RoleController, RoleAdmin, RoleReader}

const orgPrefix = "talos-lb:"

// AgentServerName is the DNS name in every agent's server certificate.
const AgentServerName = "talos-lb-agent"

// ControllerServerName is the DNS name in the controller's server certificate.
const ControllerServerName = "talos-lb-controller"

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}

	return "", fmt.Errorf("unknown role %q (want one of agent, controller, admin, reader)", s)
}

// RoleOf reads the role from a certificate; a certificate with none or with several is refused.
func RoleOf(cert *x509.Certificate) (Role, error) {
	var found []Role

	for _, org := range cert.Subject.Organization {
		name, ok := strings.CutPrefix(org, orgPrefix)
		if !ok {
			continue
		}

		r, err := ParseRole(name)
		if err != nil {
			return "", fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}

		found = append(found, r)
	}

	switch len(found) {
	case 0:
		return "", fmt.Errorf("certificate %q carries no talos-lb role", cert.Subject.CommonName)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("certificate %q carries several talos-lb roles", cert.Subject.CommonName)
	}
}

// KeyPair is a certificate with its private key, in parsed and PEM form.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed cluster CA.
func NewCA(commonName string, validity time.Duration) (*KeyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"talos-lb"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}

	return sign(tmpl, nil, validity)
}

// IssueOptions describes a certificate to issue.
type IssueOptions struct {
	CommonName string
	Role       Role
	DNSNames   []string
	IPs        []net.IP
	Validity   time.Duration
}

// Issue signs a certificate for a role. Agent and controller certificates serve
// and dial (controllers call agents; agents will call the controller); the
// others are client certificates.
func (ca *KeyPair) Issue(opts IssueOptions) (*KeyPair, error) {
	if _, err := ParseRole(string(opts.Role)); err != nil {
		return nil, err
	}

	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: opts.CommonName, Organization: []string{orgPrefix + string(opts.Role)}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:    opts.DNSNames,
		IPAddresses: opts.IPs,
	}

	switch opts.Role {
	case RoleAgent:
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append([]string{AgentServerName}, tmpl.DNSNames...)
	case RoleController:
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append([]string{ControllerServerName}, tmpl.DNSNames...)
	case RoleAdmin, RoleReader:
	}

	return sign(tmpl, ca, opts.Validity)
}

func sign(tmpl *x509.Certificate, parent *KeyPair, validity time.Duration) (*KeyPair, error) {
	if validity <= 0 {
		return nil, errors.New("certificate validity must be positive")
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}

	now := time.Now()
	tmpl.SerialNumber = serial
	// Clocks of freshly booted nodes drift; a small backdate avoids "not yet valid".
	tmpl.NotBefore = now.Add(-5 * time.Minute)
	tmpl.NotAfter = now.Add(validity)

	parentCert, parentKey := tmpl, crypto.Signer(key)
	if parent != nil {
		parentCert, parentKey = parent.Cert, parent.Key
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate %q: %w", tmpl.Subject.CommonName, err)
	}

	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}

	return ParseKeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	)
}

// ParseKeyPair parses a PEM certificate and its PEM private key.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate and key: %w", err)
	}

	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}

	return &KeyPair{Cert: pair.Leaf, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// CertPool parses PEM CA certificates into a pool.
func CertPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate found in PEM data")
	}

	return pool, nil
}

// ServerTLS is the configuration of a server that requires a client
// certificate signed by the CA; what the client may do is decided later from its role.
func ServerTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}

	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}

	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{"h2"},
	}, nil
}

// ClientTLS is the configuration of a client presenting its certificate and
// trusting only servers of the CA that present serverName.
func ClientTLS(caPEM, certPEM, keyPEM []byte, serverName string) (*tls.Config, error) {
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}

	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}

	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   serverName,
		NextProtos:   []string{"h2"},
	}, nil
}
