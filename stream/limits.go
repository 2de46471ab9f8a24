package stream

import "slices"

// sameLimits reports whether s and o have the same limits and deny list.
func (s Spec) sameLimits(o Spec) bool {
	return s.MaxConnections == o.MaxConnections && s.MaxConnectionsPerClient == o.MaxConnectionsPerClient &&
		s.UploadRate == o.UploadRate && s.DownloadRate == o.DownloadRate && slices.Equal(s.Deny, o.Deny)
}
