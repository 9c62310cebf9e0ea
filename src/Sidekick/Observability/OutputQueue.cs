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

    // A batch is written once it holds this much, even if more lines are queued.
    private const int MaxBatchBytes = 64 * 1024;

    // Holds a ready line (string) or a TraceRecord still to be formatted.
    private readonly Channel<object> _lines = Channel.CreateBounded<object>(new BoundedChannelOptions(16 * 1024)
    {
        // With Wait, TryWrite fails when full and the caller counts the drop; the Drop* modes would report
        // success for an entry they silently discard. Nothing ever awaits WriteAsync, so nothing waits.
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = true,
    });

    // Exactly one of the two: the console's own stream (bytes as they are), or a writer (tests, the demo).
    private readonly Stream? _stream;
    private readonly TextWriter? _writer;
    private readonly LineBatch _batch;
    private readonly TimeProvider _time;
    private readonly TimeSpan _flushInterval;
    // Cut short the pause between writes at dispose, so the last lines are written at once.
    private readonly CancellationTokenSource _disposing = new();
    private readonly Task _task;
    private long _dropped;

    public OutputQueue(TextWriter output, TraceFormatter formatter)
        : this(output, formatter, TimeProvider.System, DefaultFlushInterval)
    {
    }

    public OutputQueue(TextWriter output, TraceFormatter formatter, TimeProvider time, TimeSpan flushInterval)
        : this(null, output, formatter, time, flushInterval)
    {
    }

    /// <summary>
    /// Batches go to the console's stream as UTF-8, one write each: <see cref="Console.Out"/> has a 256-character
    /// buffer and flushes at every write, so a batch written through it cost a write system call per ~256
    /// characters, about one per trace line (measured 1.1 per request at 1 KiB x 32).
    /// </summary>
    public OutputQueue(Stream console, TraceFormatter formatter)
        : this(console, null, formatter, TimeProvider.System, DefaultFlushInterval)
    {
    }

    private OutputQueue(Stream? stream, TextWriter? writer, TraceFormatter formatter, TimeProvider time, TimeSpan flushInterval)
    {
        _stream = stream;
        _writer = writer;
        _batch = new LineBatch(formatter);
        _time = time;
        _flushInterval = flushInterval;
        _task = Task.Run(WriteAsync);
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
        await _task;
        _disposing.Dispose();
        _batch.Dispose();
        if (_stream is not null)
        {
            await _stream.DisposeAsync();
        }
    }

    private async Task WriteAsync()
    {
        // Entries are gathered into one write per batch (up to 64 KiB): one system call per trace line would
        // cost more than the formatting.
        var reader = _lines.Reader;
        while (await reader.WaitToReadAsync())
        {
            // Everything queued is written before the pause, so a backlog never waits an interval per batch.
            while (reader.TryPeek(out _))
            {
                var entries = 0;
                while (_batch.Length < MaxBatchBytes && reader.TryRead(out var entry))
                {
                    if (entry is TraceRecord record)
                    {
                        _batch.Add(record);
                    }
                    else
                    {
                        _batch.Add((string)entry);
                    }

                    entries++;
                }

                try
                {
                    await WriteBatchAsync();
                }
                catch (IOException)
                {
                    // stdout went away (a closed pipe, a full disk): keep proxying, count what could not be written.
                    Interlocked.Add(ref _dropped, entries);
                }

                _batch.Clear();
            }

            // The first line after a quiet spell is written at once; under load, lines then gather for an
            // interval, and writers meanwhile only add to the queue: no reader is waiting to be woken.
            if (!_disposing.IsCancellationRequested)
            {
                await Task.Delay(_flushInterval, _time, _disposing.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    private async Task WriteBatchAsync()
    {
        if (_stream is not null)
        {
            // Synchronous: the console stream has no asynchronous write of its own (its WriteAsync would queue
            // the same blocking write to another thread-pool thread), and this task is the only writer.
            _stream.Write(_batch.Bytes);
            return;
        }

        var text = new StringBuilder(Encoding.UTF8.GetString(_batch.Bytes));
        await _writer!.WriteAsync(text);
        await _writer.FlushAsync();
    }
}
