using Sidekick.Hosting;
using Sidekick.Platform;

namespace Sidekick.Tests.Platform;

/// <summary>Which of the executable's mappings may be dropped from the resident set after start-up.</summary>
public sealed class CodePagesTests
{
    private const string Exe = "/opt/sidekick/sidekick";

    private static string Mapping(string range, string permissions, string path, int privateDirtyKb = 0, int anonymousKb = 0) => $"""
        {range} {permissions} 00021000 fe:00 11657217                   {path}
        Size:               9864 kB
        Rss:                7432 kB
        Private_Clean:      7432 kB
        Private_Dirty:      {privateDirtyKb} kB
        Anonymous:          {anonymousKb} kB
        VmFlags: rd ex mr mw me sd
        """;

    [Fact]
    public void Only_clean_read_only_mappings_of_the_executable_are_released()
    {
        var smaps = string.Join('\n',
            Mapping("1000-3000", "r-xp", Exe),                        // code: released
            Mapping("3000-4000", "r--p", Exe, privateDirtyKb: 4),     // relocated (RELRO): private data, kept
            Mapping("4000-6000", "r--p", Exe),                        // read-only data: released
            Mapping("6000-7000", "rw-p", Exe),                        // writable data: kept
            Mapping("7000-8000", "r--p", Exe, anonymousKb: 4),        // copied-on-write page: kept
            Mapping("8000-9000", "r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6"), // another file: kept
            Mapping("9000-a000", "rw-p", ""))                         // anonymous memory: kept
            .Split('\n');

        var released = CodePages.CleanMappingsOf(Exe, smaps).ToArray();

        Assert.Equal([(0x1000UL, 0x2000UL), (0x4000UL, 0x2000UL)], released);
    }

    [Theory]
    [InlineData("Size: 8 kB")]                                   // truncated before the counts
    [InlineData("Private_Dirty: 0 kB", "VmFlags: rd ex")]        // Anonymous never seen
    [InlineData("Anonymous: 0 kB", "VmFlags: rd ex")]            // Private_Dirty never seen
    public void A_mapping_whose_counts_were_not_both_seen_is_not_released(params string[] fields)
    {
        var smaps = new[] { "1000-3000 r-xp 00000000 fe:00 1 " + Exe }.Concat(fields);

        Assert.Empty(CodePages.CleanMappingsOf(Exe, smaps));
    }

    [Fact]
    public async Task Releasing_for_real_drops_pages_and_the_process_runs_on()
    {
        // On this very process (the test host's executable): the dropped code comes back on first use.
        var released = CodePages.Release();

        Assert.True(released > 0, "nothing was released from the test host's executable");
        Assert.Equal(3, await Task.Run(() => Enumerable.Range(1, 2).Sum()));
    }
}
