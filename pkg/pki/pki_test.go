package pki_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/pkg/pki"
)

func TestIssueCarriesRole(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	require.NoError(t, err)

	for _, role := range pki.Roles {
		kp, err := ca.Issue(pki.IssueOptions{CommonName: string(role), Role: role, Validity: time.Hour})
		require.NoError(t, err)

		got, err := pki.RoleOf(kp.Cert)
		require.NoError(t, err)
		require.Equal(t, role, got)
		require.NoError(t, kp.Cert.CheckSignatureFrom(ca.Cert))
	}

	agent, err := ca.Issue(pki.IssueOptions{CommonName: "agent", Role: pki.RoleAgent, Validity: time.Hour})
	require.NoError(t, err)
	require.NoError(t, agent.Cert.VerifyHostname(pki.AgentServerName))
}

func TestRoleOfRefusesForeignCertificates(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	require.NoError(t, err)

	_, err = pki.RoleOf(ca.Cert)
	require.ErrorContains(t, err, "carries no talos-lb role")

	_, err = ca.Issue(pki.IssueOptions{CommonName: "x", Role: "root", Validity: time.Hour})
	require.ErrorContains(t, err, `unknown role "root"`)
}
