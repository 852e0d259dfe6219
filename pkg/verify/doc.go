// Package verify is how users know Tandem keeps its promise (DESIGN.md §7):
//
//   - Prober writes probe rows at every site and watches for them at every
//     other site, recording each write and each sighting to a run
//     directory; Analyze turns one direction's probes into lag
//     percentiles, fault windows, RTO and RPO.
//   - Checker compares tables between sites while they are being written:
//     chunk checksums in consistent snapshots, bisection to rows, and a
//     classification of each differing row against the sites' applied
//     watermarks (in flight, diverged, missing, resurrected), with repair
//     SQL.
//   - BuildReport judges a run directory against SLOs per tenant class and
//     renders it as JSON, Markdown and a self-contained HTML page.
//
// The verifier must be trustworthy both ways: no false alarm under live
// load (a row in flight is re-read, not reported; lag is measured on one
// clock) and no missed divergence (every stored column is hashed,
// NULL-safe and type-normalised, with a hash whose XOR aggregate cannot
// cancel equal changes). docs/verifier.md has the definitions.
package verify
