package config

import "slices"

// Files lists every file the agent reads besides its config: certificates,
// CA bundles and passwords, each once, in config order. On Talos an extension
// service sees only the files its ExtensionServiceConfig mounts, so tools
// (`lbctl validate`, `lbctl gen config`) check this list against the mounts
// before a node ever starts the agent.
func (c *Config) Files() []string {
	var files []string

	add := func(p string) {
		if p != "" && !slices.Contains(files, p) {
			files = append(files, p)
		}
	}

	add(c.API.TLS.CA)
	add(c.API.TLS.Cert)
	add(c.API.TLS.Key)

	for _, h := range c.HealthChecks {
		add(h.CAFile)
	}

	for _, p := range c.Proxies {
		add(p.Check.CAFile)
	}

	if c.BGP != nil {
		for _, p := range c.BGP.Peers {
			add(p.PasswordFile)
		}
	}

	if c.Members != nil {
		add(c.Members.SecretKeyFile)
	}

	return files
}
