//go:build k8s

// Package kapi runs a real kube-apiserver and etcd on loopback for the k8s test tier (build
// tag k8s, `make test-k8s`). The binaries come from hack/kapi/build.sh (built once from the Go
// module proxy and cached under the user's cache directory), or from $LB_KAPI_DIR.
//
// No kubelet, scheduler or controller-manager runs: tests create Nodes, their status and
// EndpointSlices themselves (CreateNode, SetNodeReady, CreateEndpointSlice). No namespace
// controller runs either, so a deleted namespace stays Terminating forever.
//
// Cleanup order matters. Start registers, with t.Cleanup, the stop of kube-apiserver and then
// etcd; cleanups run last-registered first, so anything a test starts after Start (informers,
// an in-process controller, leader electors, processes given Kubeconfig) must be stopped by a
// cleanup registered after Start, or before the test returns. By default an open watch (an
// informer) holds kube-apiserver's graceful shutdown (~20 s; measured over 10 s here); Start
// passes --shutdown-watch-termination-grace-period=1s, which cuts that to about a second, and
// SIGKILL follows SIGTERM after 10 s anyway, but an informer left running then retries against
// a dead server and logs errors until the test binary exits.
package kapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// EnvDir names a directory holding prebuilt kube-apiserver and etcd binaries (the Makefile
// sets it to what hack/kapi/build.sh prints). Without it, Start runs build.sh itself.
const EnvDir = "LB_KAPI_DIR"

// Address ranges the apiserver is started with: Services get ClusterIPs from these, so
// dual-stack Services (ipFamilyPolicy RequireDualStack) are accepted.
const (
	ServiceCIDRv4 = "10.0.0.0/16"
	ServiceCIDRv6 = "fd00:10::/112"
)

const (
	etcdReadyTimeout      = 30 * time.Second
	apiserverReadyTimeout = 90 * time.Second // a loaded 2-core machine: 3–6 s when quiet
	stopTimeout           = 10 * time.Second
	logTailLines          = 120
)

// Cluster is one running etcd and kube-apiserver pair, private to a test.
type Cluster struct {
	// Dir is the cluster's temporary directory: certificates, etcd's data, both logs.
	Dir string
	// Kubeconfig is the path of a kubeconfig file with admin (system:masters) credentials,
	// for processes a test starts (lb-controller --kubeconfig).
	Kubeconfig string
	// Client and Dynamic are admin clients.
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Host is the apiserver's URL, https://127.0.0.1:<port>.
	Host string
	// Stats are the start-up measurements.
	Stats Stats

	config    *rest.Config
	etcd      *process
	apiserver *process
}

// Stats are the cold-start measurements of one Cluster.
type Stats struct {
	EtcdReady      time.Duration // etcd started until its /health answers
	APIServerReady time.Duration // kube-apiserver started until /readyz and system namespaces
	Total          time.Duration // Start's whole cost, certificates included
	APIServerRSS   int64         // bytes, right after ready
	EtcdRSS        int64         // bytes, right after ready
}

// RESTConfig returns a copy of the admin client configuration (QPS 100, burst 200), safe to
// change.
func (c *Cluster) RESTConfig() *rest.Config {
	return rest.CopyConfig(c.config)
}

// Start runs etcd and kube-apiserver on free loopback ports with fresh certificates in
// t.TempDir(), waits until the apiserver is ready, and registers their stop with t.Cleanup
// (see the package comment for the order that implies). On failure it fails the test with
// the tail of the failing process's log.
func Start(t testing.TB) *Cluster {
	t.Helper()

	bin, err := binDir(t)
	if err != nil {
		t.Fatalf("kapi: %v", err)
	}

	var lastErr error

	for attempt := range 3 {
		c, err := start(t, bin, filepath.Join(t.TempDir(), "kapi"))
		if err == nil {
			return c
		}

		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}

		t.Logf("kapi: attempt %d: %v; retrying with other ports", attempt+1, err)
	}

	t.Fatalf("kapi: %v", lastErr)

	return nil
}

var errPortTaken = errors.New("a port was taken before the process bound it")

func start(t testing.TB, bin, dir string) (_ *Cluster, err error) {
	t.Helper()

	begin := time.Now()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}

	certs, err := newPKI(dir)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}

	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c := &Cluster{Dir: dir, Host: fmt.Sprintf("https://127.0.0.1:%d", ports[2])}

	// Registered before either process starts: whatever got started is stopped, apiserver
	// first. A failed attempt stops its processes at once (its error has their log).
	t.Cleanup(func() { c.stop(t) })

	defer func() {
		if err != nil {
			for _, p := range []*process{c.apiserver, c.etcd} {
				if p != nil {
					p.stop()
				}
			}
		}
	}()

	c.etcd, err = startProcess(filepath.Join(bin, "etcd"), filepath.Join(dir, "etcd.log"),
		"--name=kapi",
		"--data-dir="+filepath.Join(dir, "etcd-data"),
		"--listen-client-urls="+etcdClient,
		"--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer,
		"--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=kapi="+etcdPeer,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync=true", // a throw-away test store
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}

	if err := c.etcd.waitHTTP(etcdClient+"/health", etcdReadyTimeout); err != nil {
		return nil, err
	}

	c.Stats.EtcdReady = time.Since(c.etcd.started)

	c.apiserver, err = startProcess(filepath.Join(bin, "kube-apiserver"), filepath.Join(dir, "kube-apiserver.log"),
		"--etcd-servers="+etcdClient,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		// 127.0.0.1 as the advertised address needs the endpoint reconciler off; then the
		// default/kubernetes Service has no EndpointSlice unless a test creates one.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range="+ServiceCIDRv4+","+ServiceCIDRv6,
		"--cert-dir="+dir,
		"--tls-cert-file="+certs.servingCert,
		"--tls-private-key-file="+certs.servingKey,
		"--client-ca-file="+certs.caFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+certs.saKey,
		"--service-account-signing-key-file="+certs.saKey,
		// No token controller runs to make the default ServiceAccounts Pods would need.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
		// Open watches (informers not stopped in time) close after 1 s instead of holding the
		// shutdown for ~20 s.
		"--shutdown-watch-termination-grace-period=1s",
		"--v=1",
	)
	if err != nil {
		return nil, err
	}

	c.config = &rest.Config{
		Host:      c.Host,
		UserAgent: "kapi-test",
		QPS:       100,
		Burst:     200,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   certs.caPEM,
			CertData: certs.adminCertPEM,
			KeyData:  certs.adminKeyPEM,
		},
	}

	if c.Client, err = kubernetes.NewForConfig(c.RESTConfig()); err != nil {
		return nil, err
	}

	if c.Dynamic, err = dynamic.NewForConfig(c.RESTConfig()); err != nil {
		return nil, err
	}

	if err := c.waitReady(); err != nil {
		return nil, err
	}

	c.Stats.APIServerReady = time.Since(c.apiserver.started)
	c.Stats.Total = time.Since(begin)
	c.Stats.APIServerRSS = rss(c.apiserver.cmd.Process.Pid, "VmRSS")
	c.Stats.EtcdRSS = rss(c.etcd.cmd.Process.Pid, "VmRSS")

	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := c.writeKubeconfig(certs); err != nil {
		return nil, fmt.Errorf("writing kubeconfig: %w", err)
	}

	t.Logf("kapi: etcd ready in %v, kube-apiserver ready in %v, start %v in all; RSS kube-apiserver %d MB, etcd %d MB",
		c.Stats.EtcdReady.Round(time.Millisecond), c.Stats.APIServerReady.Round(time.Millisecond),
		c.Stats.Total.Round(time.Millisecond), c.Stats.APIServerRSS>>20, c.Stats.EtcdRSS>>20)

	return c, nil
}

// waitReady waits for /readyz and for the namespaces the apiserver makes itself (default,
// kube-system), which /readyz does not cover.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(apiserverReadyTimeout)
	last := "no answer yet"

	for {
		if err := c.apiserver.exited(); err != nil {
			return err
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %v (last: %s)\n%s",
				apiserverReadyTimeout, last, c.apiserver.tail())
		}

		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()

		switch {
		case err != nil:
			last = fmt.Sprintf("/readyz: %v %s", err, failedChecks(body))
		default:
			last = "namespaces default and kube-system missing"
			_, errDefault := c.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
			_, errSystem := c.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})

			if errDefault == nil && errSystem == nil {
				cancel()

				return nil
			}
		}

		cancel()
		time.Sleep(100 * time.Millisecond)
	}
}

// failedChecks keeps the failing lines of a /readyz?verbose-style body.
func failedChecks(body []byte) string {
	var failed []string

	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, strings.TrimSpace(line))
		}
	}

	return strings.Join(failed, "; ")
}

func (c *Cluster) writeKubeconfig(certs *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kapi"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: certs.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: certs.adminCertPEM,
		ClientKeyData:         certs.adminKeyPEM,
	}
	cfg.Contexts["kapi"] = &clientcmdapi.Context{Cluster: "kapi", AuthInfo: "admin"}
	cfg.CurrentContext = "kapi"

	return clientcmd.WriteToFile(*cfg, c.Kubeconfig)
}

// stop stops kube-apiserver, then etcd, logs their peak RSS, and on test failure their logs'
// tails.
func (c *Cluster) stop(t testing.TB) {
	for _, p := range []*process{c.apiserver, c.etcd} {
		if p == nil {
			continue
		}

		peak := rss(p.cmd.Process.Pid, "VmHWM")
		begin := time.Now()
		p.stop()

		if d := time.Since(begin); d > 5*time.Second {
			t.Logf("kapi: %s took %v to stop: was a watch (informer) still open?", p.name, d.Round(time.Millisecond))
		}

		if peak > 0 {
			t.Logf("kapi: %s peak RSS %d MB", p.name, peak>>20)
		}

		if t.Failed() {
			t.Logf("kapi: %s", p.tail())
		}
	}
}

// freePorts picks n distinct free TCP ports on 127.0.0.1, holding all of them until every
// one is picked. Another process may still take one before etcd or the apiserver binds it:
// Start then retries.
func freePorts(n int) ([]int, error) {
	var (
		ports     []int
		listeners []net.Listener
	)

	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()

	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}

		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}

	return ports, nil
}

// rss returns a /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes, or 0.
func rss(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}

	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)

			return kb << 10
		}
	}

	return 0
}

// process is one child started by Start: only it is ever signalled, by its PID, and only
// while it has not been waited for.
type process struct {
	name    string
	log     string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error // Wait's, once done is closed
}

func startProcess(path, logPath string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Killed with the test binary should it die without cleaning up (a test timeout's panic).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	if err := cmd.Start(); err != nil {
		logFile.Close()

		return nil, fmt.Errorf("starting %s: %w", path, err)
	}

	p := &process{name: filepath.Base(path), log: logPath, cmd: cmd, started: time.Now(), done: make(chan struct{})}

	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()

	return p, nil
}

// exited returns an error with the log's tail once the process has exited.
func (p *process) exited() error {
	select {
	case <-p.done:
	default:
		return nil
	}

	tail := p.tail()
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("%s exited (%v): %w\n%s", p.name, p.err, errPortTaken, tail)
	}

	return fmt.Errorf("%s exited early (%v)\n%s", p.name, p.err, tail)
}

// waitHTTP waits until url answers 200.
func (p *process) waitHTTP(rawURL string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}

	deadline := time.Now().Add(timeout)
	last := "no answer yet"

	for {
		if err := p.exited(); err != nil {
			return err
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (%s: %s)\n%s", p.name, timeout, u, last, p.tail())
		}

		if status, err := httpGet(u); err != nil {
			last = err.Error()
		} else if status == 200 {
			return nil
		} else {
			last = fmt.Sprintf("HTTP %d", status)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(u *url.URL) (int, error) {
	client := http.Client{Timeout: 2 * time.Second}

	resp, err := client.Get(u.String())
	if err != nil {
		return 0, err
	}

	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	return resp.StatusCode, nil
}

// stop sends SIGTERM, then SIGKILL after stopTimeout, and waits for the exit.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}

	_ = p.cmd.Process.Signal(syscall.SIGTERM)

	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, headed by its path.
func (p *process) tail() string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(%s: %v)", p.log, err)
	}

	var lines []string

	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)

	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > logTailLines {
			lines = lines[1:]
		}
	}

	return fmt.Sprintf("--- last %d lines of %s ---\n%s", len(lines), p.log, strings.Join(lines, "\n"))
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binDir returns the directory holding kube-apiserver and etcd: $LB_KAPI_DIR, else what
// hack/kapi/build.sh prints (it builds them the first time, ~10 min; a file lock keeps
// several test binaries from building at once).
func binDir(t testing.TB) (string, error) {
	binOnce.Do(func() {
		if d := os.Getenv(EnvDir); d != "" {
			binPath = d
		} else {
			binPath, binErr = build(t)
		}

		if binErr != nil {
			return
		}

		for _, name := range []string{"kube-apiserver", "etcd"} {
			if _, err := os.Stat(filepath.Join(binPath, name)); err != nil {
				binErr = fmt.Errorf("%w (run hack/kapi/build.sh, or unset %s)", err, EnvDir)

				return
			}
		}
	})

	return binPath, binErr
}

func build(t testing.TB) (string, error) {
	script, err := findScript()
	if err != nil {
		return "", err
	}

	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}

	lockDir := filepath.Join(cache, "talos-lb", "kapi")
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return "", err
	}

	lock, err := os.OpenFile(filepath.Join(lockDir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()

	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}

	t.Logf("kapi: %s (builds kube-apiserver and etcd the first time: ~10 min)", script)

	var stderr bytes.Buffer

	cmd := exec.Command(script)
	cmd.Stderr = &stderr

	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
	}

	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if dir := strings.TrimSpace(lines[len(lines)-1]); dir != "" {
		return dir, nil
	}

	return "", fmt.Errorf("%s printed no directory\n%s", script, stderr.String())
}

// findScript looks for hack/kapi/build.sh in the working directory (the test's package) and
// its parents.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}

	for {
		p := filepath.Join(dir, "hack", "kapi", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}

		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("hack/kapi/build.sh not found above the working directory; set %s", EnvDir)
		}

		dir = parent
	}
}
