using System.Text;
using System.Threading.Channels;

namespace Sidekick.Observability;

/// <summary>
/// Lines and trace records for stdout, formatted and written by one background task so the request path
/// neither formats nor waits on the console. When the console cannot keep up, new entries are dropped and
/// counted instead of blocking requests.
/// </summary>
internal sealed class OutputQueue : IAsyncDisposable
{
    /// <summary>
    /// How long lines gather after a write before the next one (nginx's <c>access_log … flush=</c>). Without it
    /// the writer drained the queue as fast as lines came: under load nearly every request woke the writer's
    /// thread and cost a write system call for one line (measured: ~1.2 context switches per request).
    /// </summary>
    public static readonly TimeSpan DefaultFlushInterval = TimeSpan.FromMilliseconds(20);

    // Holds a ready line (string) or a TraceRecord still to be formatted.
    private readonly Channel<object> _lines = Channel.CreateBounded<object>(new BoundedChannelOptions(16 * 1024)
    {
        // With Wait, TryWrite fails when full and the caller counts the drop; the Drop* modes would report
        // success for an entry they silently discard. Nothing ever awaits WriteAsync, so nothing waits.
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = true,
    });

    private readonly TextWriter _output;
    private readonly TraceFormatter _formatter;
    private readonly TimeProvider _time;
    private readonly TimeSpan _flushInterval;
    // Cut short the pause between writes at dispose, so the last lines are written at once.
    private readonly CancellationTokenSource _disposing = new();
    private readonly Task _writer;
    private long _dropped;

    public OutputQueue(TextWriter output, TraceFormatter formatter)
        : this(output, formatter, TimeProvider.System, DefaultFlushInterval)
    {
    }

    public OutputQueue(TextWriter output, TraceFormatter formatter, TimeProvider time, TimeSpan flushInterval)
    {
        _output = output;
        _formatter = formatter;
        _time = time;
        _flushInterval = flushInterval;
        _writer = Task.Run(WriteAsync);
    }

    /// <summary>Entries dropped because the console was too slow or could not be written to.</summary>
    public long Dropped => Volatile.Read(ref _dropped);

    public void Enqueue(string line) => Add(line);

    /// <summary>Queues a record; it is formatted on the writer task, off the request path.</summary>
    public void Enqueue(TraceRecord record) => Add(record);

    private void Add(object entry)
    {
        if (!_lines.Writer.TryWrite(entry))
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    /// <summary>Writes every line queued so far, then stops the writer; lines queued later are dropped.</summary>
    public async ValueTask DisposeAsync()
    {
        _lines.Writer.TryComplete();
        await _disposing.CancelAsync();
        await _writer;
        _disposing.Dispose();
    }

    private async Task WriteAsync()
    {
        // Entries are gathered into one write per batch (up to 64 KiB): the console is often an unbuffered,
        // auto-flushing writer, and one system call per trace line would cost more than the formatting.
        var reader = _lines.Reader;
        var batch = new StringBuilder();
        while (await reader.WaitToReadAsync())
        {
            // Everything queued is written before the pause, so a backlog never waits an interval per batch.
            while (reader.TryPeek(out _))
            {
                var entries = 0;
                while (batch.Length < 64 * 1024 && reader.TryRead(out var entry))
                {
                    batch.Append(entry as string ?? _formatter.Format((TraceRecord)entry)).Append('\n');
                    entries++;
                }

                try
                {
                    await _output.WriteAsync(batch);
                    await _output.FlushAsync();
                }
                catch (IOException)
                {
                    // stdout went away (a closed pipe, a full disk): keep proxying, count what could not be written.
                    Interlocked.Add(ref _dropped, entries);
                }

                batch.Clear();
            }

            // The first line after a quiet spell is written at once; under load, lines then gather for an
            // interval, and writers meanwhile only add to the queue: no reader is waiting to be woken.
            if (!_disposing.IsCancellationRequested)
            {
                await Task.Delay(_flushInterval, _time, _disposing.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }
}
