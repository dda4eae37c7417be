package election

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// Settings are what a running Raft node was started with; a change restarts it.
type Settings struct {
	Name               string
	Listen             string
	StateDir           string
	HeartbeatTimeout   time.Duration
	LeaderLeaseTimeout time.Duration
}

func settingsOf(spec *resourcepb.VipConfigSpec) Settings {
	return Settings{
		Name:               spec.GetNodeName(),
		Listen:             spec.GetElectionListen(),
		StateDir:           spec.GetStateDir(),
		HeartbeatTimeout:   spec.GetHeartbeatTimeout().AsDuration(),
		LeaderLeaseTimeout: spec.GetLeaderLeaseTimeout().AsDuration(),
	}
}

// node is one Raft member. Raft is used for its election: the log holds only
// membership and "released" markers, and leadership (with its lease) is the VIP.
type node struct {
	raft      *raft.Raft
	fsm       *releaseFSM
	transport raft.Transport
	store     *raftboltdb.BoltStore
}

// newNode starts Raft with its term, vote and log persisted under the state
// directory, so a restarted agent never votes twice in one term.
func newNode(s Settings, peers []*resourcepb.VipPeer, transport raft.Transport, logOutput io.Writer) (*node, error) {
	dir := filepath.Join(s.StateDir, "election")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating election state directory: %w", err)
	}

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("opening election state %s: %w", dir, err)
	}

	snapshots, err := raft.NewFileSnapshotStore(dir, 1, logOutput)
	if err != nil {
		store.Close() //nolint:errcheck

		return nil, fmt.Errorf("opening election snapshots: %w", err)
	}

	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(s.Name)
	cfg.HeartbeatTimeout = s.HeartbeatTimeout
	cfg.ElectionTimeout = s.HeartbeatTimeout
	cfg.LeaderLeaseTimeout = s.LeaderLeaseTimeout
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: logOutput, JSONFormat: true})

	hasState, err := raft.HasExistingState(store, store, snapshots)
	if err != nil {
		store.Close() //nolint:errcheck

		return nil, fmt.Errorf("reading election state: %w", err)
	}

	// Every peer bootstraps with the same membership from its config; Raft
	// treats identical bootstraps as one. Later membership comes from the log.
	if !hasState {
		if err := raft.BootstrapCluster(cfg, store, store, snapshots, transport, membership(peers)); err != nil {
			store.Close() //nolint:errcheck

			return nil, fmt.Errorf("bootstrapping election: %w", err)
		}
	}

	fsm := &releaseFSM{}

	r, err := raft.NewRaft(cfg, fsm, store, store, snapshots, transport)
	if err != nil {
		store.Close() //nolint:errcheck

		return nil, fmt.Errorf("starting election: %w", err)
	}

	return &node{raft: r, fsm: fsm, transport: transport, store: store}, nil
}

func membership(peers []*resourcepb.VipPeer) raft.Configuration {
	var c raft.Configuration

	for _, p := range peers {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.GetName()), Address: raft.ServerAddress(p.GetAddress())})
	}

	return c
}

func (n *node) shutdown() error {
	err := n.raft.Shutdown().Error()

	if c, ok := n.transport.(io.Closer); ok {
		c.Close() //nolint:errcheck
	}

	if closeErr := n.store.Close(); err == nil {
		err = closeErr
	}

	return err
}

// nopFSM is the state machine of an election-only Raft: nothing to apply.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}
