package broker_test

import (
	"testing"

	"github.com/sockfactory/sockfactory/internal/broker"
)

func BenchmarkParseTarget(b *testing.B) {
	for _, bc := range []struct{ name, addr string }{
		{"ipv4", "127.0.0.1:8080"},
		{"ipv6", "[2001:db8::1]:443"},
		{"name", "api.example.net:443"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := broker.ParseTarget(bc.addr); err != nil {
					b.Fatalf("ParseTarget(%q): %v", bc.addr, err)
				}
			}
		})
	}
}
