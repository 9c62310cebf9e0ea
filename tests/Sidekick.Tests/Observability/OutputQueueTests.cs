using System.Text;
using Microsoft.Extensions.Time.Testing;
using Sidekick.Observability;

namespace Sidekick.Tests.Observability;

/// <summary>
/// The output queue writes in batches: the first line after a quiet spell at once, then whatever gathered
/// during the flush interval in one write; disposing writes everything queued without waiting.
/// </summary>
public sealed class OutputQueueTests
{
    private static readonly TraceFormatter Formatter = new(new ConsoleMode(true, false, false, false, false));
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(20);

    [Fact]
    public async Task Lines_written_in_batches_are_all_there_after_dispose()
    {
        var console = new RecordingWriter();
        var queue = new OutputQueue(console, Formatter);
        for (var i = 0; i < 10_000; i++)
        {
            queue.Enqueue($"line {i}");
        }

        await queue.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, queue.Dropped);
        Assert.Equal(Enumerable.Range(0, 10_000).Select(i => $"line {i}"), console.Text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.InRange(console.Writes.Count, 1, 1_000);
    }

    [Fact]
    public async Task After_a_write_lines_gather_for_the_flush_interval_and_go_out_in_one_write()
    {
        var console = new RecordingWriter();
        var clock = new PauseWatchingClock();
        await using var queue = new OutputQueue(console, Formatter, clock, Interval);

        // The first line after a quiet spell is written at once, with no time passing.
        queue.Enqueue("first");
        await console.WaitForWritesAsync(1);
        Assert.Equal("first\n", console.Writes[0]);

        // The writer now pauses on the clock; lines queued meanwhile wait for the interval to pass.
        await clock.WaitForPauseAsync();
        queue.Enqueue("second");
        queue.Enqueue("third");
        Assert.Single(console.Writes);

        clock.Fake.Advance(Interval);
        await console.WaitForWritesAsync(2);
        Assert.Equal("second\nthird\n", console.Writes[1]);
    }

    [Fact]
    public async Task Dispose_writes_what_is_queued_without_waiting_for_the_interval()
    {
        var console = new RecordingWriter();
        var clock = new PauseWatchingClock();
        var queue = new OutputQueue(console, Formatter, clock, Interval);
        queue.Enqueue("first");
        await console.WaitForWritesAsync(1);
        await clock.WaitForPauseAsync();
        queue.Enqueue("last");

        // The fake clock never moves: only cutting the pause short lets the last line out.
        await queue.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("first\nlast\n", console.Text);
        Assert.Equal(0, queue.Dropped);
    }

    [Fact]
    public async Task Stopping_gives_up_on_an_output_that_takes_nothing_after_the_drain_timeout()
    {
        // A reader that stopped reading (a paused log shipper, a full pipe): the writer's write never returns.
        var console = new StuckWriter();
        var clock = new PauseWatchingClock();
        var queue = new OutputQueue(console, Formatter, clock, Interval);
        queue.Enqueue("stuck");
        await console.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var stopping = queue.DisposeAsync().AsTask();
        await clock.WaitForPauseAsync(); // the only timer: the stop's wait for the writer
        clock.Fake.Advance(OutputQueue.DrainTimeout - TimeSpan.FromMilliseconds(1));
        Assert.False(stopping.IsCompleted);
        clock.Fake.Advance(TimeSpan.FromMilliseconds(1));
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        console.Release.SetResult();
    }

    [Fact]
    public async Task The_console_stream_gets_every_line_as_utf8()
    {
        var formatter = new TraceFormatter(new ConsoleMode(true, false, false, true, false));
        var record = new TraceRecord
        {
            IsProbe = false, Host = "http://m1:9000", Time = new DateTime(2026, 1, 1, 12, 0, 0, DateTimeKind.Utc), Client = "10.0.0.1",
            StatusCode = 200, Method = "GET", Path = "/b/ö", ProbeUrl = "http://m1:9000/h",
        };
        var console = new MemoryStream();
        var queue = new OutputQueue(console, formatter);
        var expected = new StringBuilder();
        for (var i = 0; i < 3_000; i++)
        {
            queue.Enqueue(record with { Rx = i });
            expected.Append(formatter.Format(record with { Rx = i })).Append('\n');
            queue.Enqueue($"line {i} ↑");
            expected.Append($"line {i} ↑\n");
        }

        await queue.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, queue.Dropped);
        Assert.Equal(expected.ToString(), Encoding.UTF8.GetString(console.ToArray()));
    }

    /// <summary>Records every write the queue makes (one per batch).</summary>
    private sealed class RecordingWriter : TextWriter
    {
        private readonly List<string> _writes = [];
        private readonly SemaphoreSlim _written = new(0);

        public override Encoding Encoding => Encoding.UTF8;

        public IReadOnlyList<string> Writes
        {
            get
            {
                lock (_writes)
                {
                    return [.. _writes];
                }
            }
        }

        public string Text => string.Concat(Writes);

        public override Task WriteAsync(StringBuilder? value, CancellationToken cancellationToken = default)
        {
            lock (_writes)
            {
                _writes.Add(value?.ToString() ?? "");
            }

            _written.Release();
            return Task.CompletedTask;
        }

        public async Task WaitForWritesAsync(int count)
        {
            while (Writes.Count < count)
            {
                Assert.True(await _written.WaitAsync(TimeSpan.FromSeconds(30)), $"no write {count} within 30 s");
            }
        }
    }

    /// <summary>An output whose writes never return until released.</summary>
    private sealed class StuckWriter : TextWriter
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override Encoding Encoding => Encoding.UTF8;

        public override Task WriteAsync(StringBuilder? value, CancellationToken cancellationToken = default)
        {
            Entered.TrySetResult();
            return Release.Task;
        }
    }

    /// <summary>A fake clock that tells when the writer starts a pause (creates its delay's timer).</summary>
    private sealed class PauseWatchingClock : TimeProvider
    {
        private readonly SemaphoreSlim _pauses = new(0);

        public FakeTimeProvider Fake { get; } = new();

        public override DateTimeOffset GetUtcNow() => Fake.GetUtcNow();

        public override long GetTimestamp() => Fake.GetTimestamp();

        public override long TimestampFrequency => Fake.TimestampFrequency;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = Fake.CreateTimer(callback, state, dueTime, period);
            _pauses.Release();
            return timer;
        }

        public async Task WaitForPauseAsync() =>
            Assert.True(await _pauses.WaitAsync(TimeSpan.FromSeconds(30)), "the writer did not pause");
    }
}
