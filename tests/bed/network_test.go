package bed

import "testing"

// The kernel's connection tables as Linux prints them on amd64.
func TestProcAddr(t *testing.T) {
	for _, tc := range []struct{ in, ip string }{
		{"0100007F:08AE", "127.0.0.1"},
		{"C83CE70A:08AE", "10.231.60.200"},
		{"0000000000000000FFFF0000C83CE70A:08AE", "10.231.60.200"}, // v4-mapped, on a dual-stack socket
		{"00000000000000000000000001000000:08AE", "::1"},
	} {
		ip, port, err := procAddr(tc.in)
		if err != nil || ip != tc.ip || port != 2222 {
			t.Errorf("procAddr(%q) = %s, %d, %v; want %s, 2222", tc.in, ip, port, err, tc.ip)
		}
	}
	if _, _, err := procAddr("0100007F"); err == nil {
		t.Error("an address without a port was accepted")
	}
}
