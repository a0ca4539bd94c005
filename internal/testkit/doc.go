// Package testkit holds the project's stand-ins for the proprietary Avamar
// client and server, and the helpers tests use to drive them:
//
//   - MCS, a fake Management Console Server (StartMCS);
//   - BuildRPM, a fake AvamarClient RPM with the real layout, whose
//     bin/avagent.bin is the avkit binary (see package fakeagent);
//   - BuildBinaries and WriteRPM, which build the project's commands once
//     per test process;
//   - Need, NeedRoot and NeedCommand, which skip a test on a laptop that
//     lacks a prerequisite and fail it in CI;
//   - Podman, which builds the container tests' images (the Debian base,
//     the product and site images of the Dockerfiles) with podman.
//
// Nothing in the product knows it talks to a fake: the kit is also the
// written-down expectation of what the real client and server do.
package testkit
