package election

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// releaseFSM remembers the last term whose leader released the VIP before
// handing leadership over. A leader of the very next term can then hold the
// VIP at once: no other leader can still be holding it. Any other new leader
// must first wait out the lease an older-term leader may still run on.
type releaseFSM struct {
	releasedTerm atomic.Uint64
}

func encodeRelease(term uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, term)
}

// Apply implements raft.FSM.
func (f *releaseFSM) Apply(l *raft.Log) any {
	if len(l.Data) == 8 {
		f.releasedTerm.Store(binary.BigEndian.Uint64(l.Data))
	}

	return nil
}

// Snapshot implements raft.FSM.
func (f *releaseFSM) Snapshot() (raft.FSMSnapshot, error) {
	return releaseSnapshot(f.releasedTerm.Load()), nil
}

// Restore implements raft.FSM.
func (f *releaseFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close() //nolint:errcheck

	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return fmt.Errorf("reading election snapshot: %w", err)
	}

	f.releasedTerm.Store(binary.BigEndian.Uint64(b[:]))

	return nil
}

type releaseSnapshot uint64

func (s releaseSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(encodeRelease(uint64(s))); err != nil {
		sink.Cancel() //nolint:errcheck

		return fmt.Errorf("writing election snapshot: %w", err)
	}

	return sink.Close()
}

func (releaseSnapshot) Release() {}
