namespace Sidekick.Tests;

/// <summary>
/// Tests that saturate the machine (chaos runs, 10,000 connections, slow readers, the built program as a
/// process) or that time what they test (a backend starting late): they run one at a time, after the
/// parallel ones, so that neither their verdicts nor the others' depend on what else runs on two cores.
/// </summary>
[CollectionDefinition(nameof(HeavyTests), DisableParallelization = true)]
public sealed class HeavyTests;
