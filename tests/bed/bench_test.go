package bed

import (
	"context"
	"testing"
	"time"
)

// BenchmarkBoot measures one container from systemd-nspawn to a booted system, then its stop.
func BenchmarkBoot(b *testing.B) {
	bd := New(b, Options{})
	ctx := context.Background()
	var boot, stop time.Duration
	for b.Loop() {
		m, err := bd.Boot(ctx, MachineOptions{})
		if err != nil {
			b.Fatal(err)
		}
		boot += m.BootTime
		start := time.Now()
		if err := m.Stop(); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(start)
	}
	b.ReportMetric(float64(boot.Milliseconds())/float64(b.N), "boot-ms/op")
	b.ReportMetric(float64(stop.Milliseconds())/float64(b.N), "stop-ms/op")
}
