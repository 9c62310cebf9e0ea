using Sidekick.Caching;

namespace Sidekick.Tests.Caching;

/// <summary>Which bytes of a fill are in its spool, as ranged responses land in any order and meet.</summary>
public sealed class FillCoverageTests
{
    [Fact]
    public void Ranges_landing_out_of_order_merge_and_each_byte_knows_where_its_run_ends()
    {
        var coverage = new FillCoverage();
        coverage.Add(300, 400);
        coverage.Add(100, 200);
        Assert.Equal(0, coverage.Prefix);
        Assert.Equal(200, coverage.Covered);

        Assert.Equal(200, coverage.RunEnd(100)); // the first byte of a run
        Assert.Equal(200, coverage.RunEnd(199)); // its last
        Assert.Equal(200, coverage.RunEnd(200)); // the gap: not there
        Assert.Equal(50, coverage.RunEnd(50)); // before anything
        Assert.Equal(400, coverage.RunEnd(350));
        Assert.Equal(400, coverage.RunEnd(400)); // the end is exclusive
        Assert.Equal(999, coverage.RunEnd(999));

        coverage.Add(0, 100);
        coverage.Add(150, 320); // overlaps both neighbours
        Assert.Equal(400, coverage.Prefix);
        Assert.Equal(400, coverage.Covered);
        Assert.Equal(400, coverage.RunEnd(0));
        Assert.Equal(400, coverage.RunEnd(250));
    }
}
