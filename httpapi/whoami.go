package httpapi

import (
	"net/http"
	"strings"
)

// whoamiAnswer is GET /v1/whoami: what the caller's token may do, so a
// client (the dashboard) shows write controls only to those who may write.
type whoamiAnswer struct {
	// Access is "read" or "write".
	Access string `json:"access"`
	// Token is the token's id as the audit log shows it, empty when the
	// API needs no token.
	Token string `json:"token"`
	// Auth says whether the API needs a token.
	Auth bool `json:"auth"`
}

// whoami answers what the caller may do. It is a read route: the read
// token is enough to ask, and without a token configured everyone may
// write (the API then listens on loopback only).
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	id, err := s.cfg.Tokens.authorize(r, Read)
	if err != nil {
		return err
	}
	out := whoamiAnswer{Access: "write", Auth: s.cfg.Tokens.Enabled()}
	if out.Auth {
		out.Token = id
		if strings.HasPrefix(id, "read:") {
			out.Access = "read"
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
