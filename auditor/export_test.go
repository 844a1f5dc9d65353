package auditor

// SetBetweenReads sets a function Repair calls between its reads of the
// standby's checkpoint and of the key on the primary.
func SetBetweenReads(a *Auditor, fn func(key string)) { a.betweenReads = fn }
