package testkit

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"

	gossh "golang.org/x/crypto/ssh"
)

// ManyAuthorizedKeys is an authorized_keys file of n lines as a large
// team's would be: ed25519 keys with a comment, about 140 bytes a line,
// and every (n/bad)-th line one that does not parse (bad of them in all).
// The same n and bad give the same file. The keys are random points that
// no private key is known for: nobody logs in with them.
func ManyAuthorizedKeys(n, bad int) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{23}))
	every := n / max(bad, 1)
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		comment := fmt.Sprintf("operator-%05d@workstation-%05d.backup-team.example.com", i, rng.IntN(100000))
		if bad > 0 && i%every == 0 && i/every <= bad {
			fmt.Fprintf(&b, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%064x! %s\n", rng.Uint64(), comment)
			continue
		}
		raw := make([]byte, ed25519.PublicKeySize)
		for j := range raw {
			raw[j] = byte(rng.UintN(256))
		}
		pk, err := gossh.NewPublicKey(ed25519.PublicKey(raw))
		if err != nil {
			panic(err) // a 32-byte ed25519 key always makes one
		}
		fmt.Fprintf(&b, "%s %s\n", bytes.TrimSpace(gossh.MarshalAuthorizedKey(pk)), comment)
	}
	return b.Bytes()
}
