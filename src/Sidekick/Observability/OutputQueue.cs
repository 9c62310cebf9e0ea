using System.Text;

namespace Sidekick.Observability;

/// <summary>
/// Lines and trace records for stdout, written by one background task so the request path never waits on the
/// console. Each entry is formatted as it comes, straight into the UTF-8 batch the writer takes next (one of two
/// it swaps), so a record lives only as long as its request and no queue holds it: queued records outlived the
/// young collections under load and the collector moved them (bench/results-notes.md, 2026-12-06).
/// When the console cannot keep up, the batch stops at <see cref="MaxPendingEntries"/> entries and new ones are
/// dropped and counted instead of blocking requests.
/// </summary>
internal sealed class OutputQueue : IAsyncDisposable
{
    /// <summary>
    /// How long lines gather after a write before the next one (nginx's <c>access_log … flush=</c>). Without it
    /// the writer wrote as fast as lines came: under load nearly every request woke the writer's thread and cost
    /// a write system call for one line (measured: ~1.2 context switches per request).
    /// </summary>
    public static readonly TimeSpan DefaultFlushInterval = TimeSpan.FromMilliseconds(20);

    /// <summary>Entries held at most, those being written included; later ones are dropped while the console is that far behind.</summary>
    internal const int MaxPendingEntries = 16 * 1024;

    // A bound in bytes too, for the --debug shapes, whose records carry every header.
    private const int MaxPendingBytes = 16 * 1024 * 1024;

    private readonly Lock _gate = new();
    // Exactly one of the two: the console's own stream (bytes as they are), or a writer (tests, the demo).
    private readonly Stream? _stream;
    private readonly TextWriter? _writer;
    private readonly TimeProvider _time;
    private readonly TimeSpan _flushInterval;
    private readonly SemaphoreSlim _wake = new(0);
    // Cut short the pause between writes at dispose, so the last lines are written at once.
    private readonly CancellationTokenSource _disposing = new();
    private readonly Task _task;
    private LineBatch _filling; // entries are added here, under _gate
    private LineBatch _other; // the batch the writer holds while _writing, else the spare one
    private bool _writing;
    private bool _writerWaiting;
    private bool _completed;
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
        _filling = new LineBatch(formatter);
        _other = new LineBatch(formatter);
        _time = time;
        _flushInterval = flushInterval;
        _task = Task.Run(WriteAsync);
    }

    /// <summary>Entries dropped because the console was too slow or could not be written to.</summary>
    public long Dropped => Volatile.Read(ref _dropped);

    public void Enqueue(string line)
    {
        lock (_gate)
        {
            if (HasRoomLocked())
            {
                _filling.Add(line);
                WakeLocked();
                return;
            }
        }

        Interlocked.Increment(ref _dropped);
    }

    /// <summary>Formats a record into the batch the writer takes next.</summary>
    public void Enqueue(in TraceRecord record)
    {
        lock (_gate)
        {
            if (HasRoomLocked())
            {
                _filling.Add(in record);
                WakeLocked();
                return;
            }
        }

        Interlocked.Increment(ref _dropped);
    }

    /// <summary>
    /// How long stopping waits for the output to take the lines still queued. A reader that stopped reading (a
    /// paused log shipper, a stalled container log driver, a full pipe) leaves the writer in a write that never
    /// returns, and the process never exited on SIGTERM: its orchestrator waited for the kill.
    /// </summary>
    internal static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Writes every line queued so far, then stops the writer; lines queued later are dropped. Gives up after
    /// <see cref="DrainTimeout"/>, leaving the writer's buffers and the output to the process's exit.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _completed = true;
            WakeLocked();
        }

        await _disposing.CancelAsync();
        try
        {
            await _task.WaitAsync(DrainTimeout, _time);
        }
        catch (TimeoutException)
        {
            return; // the writer is still in a write: nothing it holds may be disposed under it
        }

        _disposing.Dispose();
        _wake.Dispose();
        _filling.Dispose();
        _other.Dispose();
        if (_stream is not null)
        {
            await _stream.DisposeAsync();
        }
    }

    private bool HasRoomLocked() =>
        !_completed &&
        _filling.Count + (_writing ? _other.Count : 0) < MaxPendingEntries &&
        _filling.Length + (_writing ? _other.Length : 0) < MaxPendingBytes;

    private void WakeLocked()
    {
        if (_writerWaiting)
        {
            _writerWaiting = false;
            _wake.Release();
        }
    }

    private async Task WriteAsync()
    {
        while (true)
        {
            LineBatch? batch = null;
            lock (_gate)
            {
                if (_filling.Count == 0)
                {
                    if (_completed)
                    {
                        return;
                    }

                    // Nothing to write: the next entry wakes the writer, and is written at once.
                    _writerWaiting = true;
                }
                else
                {
                    (batch, _filling, _other) = (_filling, _other, _filling);
                    _writing = true;
                }
            }

            if (batch is null)
            {
                await _wake.WaitAsync();
                continue;
            }

            try
            {
                await WriteBatchAsync(batch);
            }
            catch (IOException)
            {
                // stdout went away (a closed pipe, a full disk): keep proxying, count what could not be written.
                Interlocked.Add(ref _dropped, batch.Count);
            }

            lock (_gate)
            {
                batch.Clear();
                _writing = false;
            }

            // Under load, lines now gather for an interval while nobody needs to wake the writer; the first line
            // after a quiet spell was written at once.
            if (!_disposing.IsCancellationRequested)
            {
                await Task.Delay(_flushInterval, _time, _disposing.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    private async Task WriteBatchAsync(LineBatch batch)
    {
        if (_stream is not null)
        {
            // Synchronous: the console stream has no asynchronous write of its own (its WriteAsync would queue
            // the same blocking write to another thread-pool thread), and this task is the only writer.
            _stream.Write(batch.Bytes);
            return;
        }

        var text = new StringBuilder(Encoding.UTF8.GetString(batch.Bytes));
        await _writer!.WriteAsync(text);
        await _writer.FlushAsync();
    }
}
