using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using Sidekick.Platform;

namespace Sidekick.Caching;

/// <summary>
/// Writes a whole-response fill's body into its spool file off the client's copy loop and past the page cache.
/// Measured on the machines this runs on (bench/cache-results.md): a buffered write into new page-cache pages
/// costs 0.3 to 9 CPU seconds per GiB, erratically, and it ran on the copy loop, so a MISS took up to ten times
/// the uncached proxy's time; the same bytes written with O_DIRECT cost 0.07-0.1 s in 2 MiB writes (0.2-0.8 s in
/// 256 KiB writes, most of it the writer thread's wake-ups). The copy loop only copies the body into one of two
/// aligned buffers (with non-temporal stores, <see cref="StreamingCopy"/>); a single writer thread for the process writes each full buffer at its offset with O_DIRECT
/// (through a second descriptor of the same file) and then publishes the bytes to the fill (readers and the
/// uploader read the spool as before, through the page cache). The copy loop never blocks on the writer (it is an
/// event loop's thread, shared by every connection on it): when every buffer of a fill is waiting for the writer,
/// the next bytes go into one more buffer, and the copy loop awaits <see cref="WhenWritable"/> before it receives
/// more. The local disk still paces the client as the buffered write did, never the store. The last buffer is written padded to the block size with zeros; what lies past the body's length in the
/// file is never read. Where O_DIRECT cannot be opened, or a write with it fails (that fill is given up as a spool error),
/// fills write through the page cache on the copy loop instead, as they did before.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "The descriptor is closed by the writer thread.")]
internal sealed unsafe class DirectSpoolWriter
{
    /// <summary>
    /// Buffers per fill, what one fill holds in memory while the copy loop goes on receiving: one filled by the copy
    /// loop while the other is written. When both wait for the writer, one more takes the bytes already received
    /// (a fill holds at most one receive beyond these), and the copy loop awaits <see cref="WhenWritable"/>.
    /// </summary>
    internal const int Buffers = 2;

    /// <summary>Tests only: run by the writer thread before each write, with the fill written (a test holds the writer there).</summary>
    internal static Action<CacheFill>? BeforeWriteForTests;

    // Which buffer size each fill gets: a process-wide budget of large buffers.
    private static readonly DirectBufferBudget s_budget = new(DirectBufferBudget.DefaultLargeFills);

    // The large buffers, kept from one fill to the next: as many as the large fills use at once.
    private static readonly SpoolBufferPool s_buffers = new(DirectBufferBudget.DefaultLargeFills * Buffers, TimeProvider.System);

    /// <summary>The alignment O_DIRECT asks of addresses, offsets and lengths (the largest logical block size in use).</summary>
    private const int Block = SpoolBufferPool.Alignment;

    // The writer thread's queue. A plain queue under a monitor, pulsed only when the writer sleeps: a busy writer
    // takes the next job without a wake-up, and no side spins (on two cores a spinning waiter takes the CPU the
    // copy loop needs). Measured with perf on 64 MiB misses: with a BlockingCollection the writer thread took 23-26 %
    // of the process's samples, mostly in wake-ups and spin-waits; with this queue 15 %.
    private static readonly Queue<Job> Jobs = StartWriterThread();
    private static bool s_writerWaiting;

    /// <summary>
    /// How long a copy loop waits for the writer to take one of its fill's buffers before the fill is given up
    /// (<see cref="FillAbandonReason.SpoolError"/>): a spool device hung in a write would otherwise hold every miss
    /// behind it, and its client, for as long as the device hangs. The client is then served on from the origin.
    /// </summary>
    public static readonly TimeSpan StallTimeout = TimeSpan.FromSeconds(30);

    private readonly CacheFill _fill;
    private readonly SafeFileHandle _direct;
    private readonly int _bufferSize;
    private readonly TimeProvider _time;
    private ITimer? _stall; // armed while the copy loop waits (made at its first wait)
    private long _waitingSince; // when the copy loop's current wait began (a timestamp of _time)
    private readonly ConcurrentBag<nint> _spare = [];
    private readonly Lock _lock = new();
    // Set while the copy loop waits; continuations never run on the writer thread. A task, not a reusable source: a fill
    // handed off (FillWriter.HandOff) can have two loops waiting at once, its old feeder's and the new one's.
    private TaskCompletionSource? _writable;
    private int _queued; // buffers sent to the writer and not yet written
    private nint _current; // the buffer the copy loop fills; 0 between buffers
    private LentBuffer? _currentLent; // _current's loans, once part of it was lent (Lend)
    private int _filled;
    private long _position; // where the current buffer starts in the file
    private bool _closed;

    private DirectSpoolWriter(CacheFill fill, SafeFileHandle direct, int bufferSize, TimeProvider time)
    {
        _fill = fill;
        _direct = direct;
        _bufferSize = bufferSize;
        _time = time;
    }

    /// <summary>
    /// A writer for <paramref name="fill"/>'s spool, or null where O_DIRECT cannot be used (a file system without
    /// it, such as tmpfs, or not Linux): the fill then writes through the page cache on the copy loop, as before.
    /// </summary>
    public static DirectSpoolWriter? TryOpen(CacheFill fill, SafeFileHandle spool, TimeProvider time)
    {
        if (!OperatingSystem.IsLinux() || Volatile.Read(ref s_failed))
        {
            return null;
        }

        // The spool is already open (and unlinked at close): a second descriptor of the same file, with O_DIRECT.
        var path = "/proc/self/fd/" + spool.DangerousGetHandle().ToInt64().ToString(CultureInfo.InvariantCulture);
        var fd = Libc.open(path, Libc.O_WRONLY | Libc.O_CLOEXEC | Libc.O_DIRECT);
        if (fd < 0)
        {
            return null;
        }

        Interlocked.Increment(ref s_opened);
        return new DirectSpoolWriter(fill, new SafeFileHandle(fd, ownsHandle: true), s_budget.Take(), time);
    }

    private static long s_opened;

    /// <summary>Fills whose spool was written with O_DIRECT since start.</summary>
    public static long Opened => Volatile.Read(ref s_opened);

    // A file system that opens with O_DIRECT and then refuses the writes: later fills write through the page cache.
    private static bool s_failed;

    /// <summary>
    /// Whether a failed write says the file system refuses O_DIRECT writes (EINVAL: an alignment it does not take),
    /// which turns O_DIRECT off for later fills. A full disk (ENOSPC, EDQUOT) or a failing device gives up only the
    /// fill that met it: the next fill tries O_DIRECT again, so a spool that was full once does not leave the process
    /// on the page cache's slower writes until it restarts.
    /// </summary>
    internal static bool RefusesDirectIo(Exception error) => error is IOException { HResult: Libc.EINVAL };

    /// <summary>
    /// Lets the page cache drop what the upload read of a directly written spool: those pages are of no use once their
    /// part is in the store, and the next fill that takes the file (kept for reuse) would otherwise pay for them on
    /// its own copy loop's time, as every <c>O_DIRECT</c> write first drops the cached pages of its range (measured:
    /// ~1.5 ms of the writer thread per 64 MiB miss on a reused file). A reader still reading the range reads it from
    /// the disk again. A <paramref name="length"/> of 0 is to the end of the file. Linux only, as the direct writer;
    /// errors are ignored (pages that stay cost only that).
    /// </summary>
    public static void ForgetReadPages(SafeFileHandle spool, long offset, long length)
    {
        if (OperatingSystem.IsLinux())
        {
            _ = Libc.posix_fadvise(spool, offset, length, Libc.POSIX_FADV_DONTNEED);
        }
    }

    /// <summary>
    /// The next bytes of the body (the copy loop's thread); never waits for the writer (see <see cref="WhenWritable"/>).
    /// False once the writer is closed.
    /// </summary>
    public bool Append(ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            while (data.Length > 0)
            {
                if (_closed)
                {
                    return false; // Close freed the buffer
                }

                TakeBufferLocked();
                var take = Math.Min(data.Length, _bufferSize - _filled);
                var target = (byte*)_current + _filled;
                fixed (byte* source = data)
                {
                    if (source == target)
                    {
                        // Received where it belongs, through memory this writer lent (Lend): nothing to copy.
                        Interlocked.Add(ref s_inPlace, take);
                    }
                    else
                    {
                        StreamingCopy.Copy(data[..take], target); // read next by the disk, not the CPU
                        Interlocked.Add(ref s_copied, take);
                    }
                }

                _filled += take;
                data = data[take..];
                if (_filled == _bufferSize)
                {
                    SendLocked(then: null);
                }
            }
        }

        return true;
    }

    /// <summary>
    /// The current buffer from the next byte on, at most <paramref name="maxLength"/> bytes, lent to the client
    /// connection's output pipe (<see cref="Networking.LendingPool"/>): the copy loop receives the body there, the
    /// client is sent it from there, and <see cref="Append"/> finds it in place. The buffer is reused (or freed) only
    /// once the writer has written it and every loan of it was given back, so the client's bytes stay as received until
    /// they were sent, whatever becomes of the fill. Null once the writer is closed.
    /// </summary>
    public IMemoryOwner<byte>? Lend(long maxLength)
    {
        lock (_lock)
        {
            if (_closed || maxLength <= 0)
            {
                return null;
            }

            TakeBufferLocked();
            _currentLent ??= new LentBuffer(_current, _bufferSize);
            return _currentLent.Loan(_filled, (int)Math.Min(_bufferSize - _filled, maxLength));
        }
    }

    /// <summary>
    /// Another response feeds the fill from here on (<see cref="FillWriter.HandOff"/>), while the client connection
    /// this writer lent part of its current buffer to goes on receiving its own response's next bytes into the rest
    /// of that loan: the bytes written so far are copied to another buffer, which the next bytes go into, and the lent
    /// one is let go of (it goes back to the pool once the pipe gave its loans back).
    /// </summary>
    public void Unlend()
    {
        lock (_lock)
        {
            if (_closed || _currentLent is not { } lent)
            {
                return;
            }

            var moved = AnotherBuffer();
            Buffer.MemoryCopy((void*)_current, (void*)moved, _bufferSize, _filled);
            lent.Release();
            _current = moved;
            _currentLent = null;
        }
    }

    /// <summary>A buffer for the copy loop to fill, when it has none: one this fill used before, else the pool's.</summary>
    private void TakeBufferLocked()
    {
        if (_current == 0)
        {
            _current = AnotherBuffer();
            _filled = 0;
        }
    }

    /// <summary>One this fill used before, else the pool's.</summary>
    private nint AnotherBuffer() => _spare.TryTake(out var spare) ? spare : s_buffers.Rent(_bufferSize);

    private static long s_inPlace;
    private static long s_copied;
    private static long s_lentBytes;

    /// <summary>Body bytes that reached a spool buffer without a copy (received into a lent buffer) since start.</summary>
    public static long BytesInPlace => Volatile.Read(ref s_inPlace);

    /// <summary>Body bytes copied into a spool buffer since start (the client's response was in memory of its own).</summary>
    public static long BytesCopied => Volatile.Read(ref s_copied);

    /// <summary>
    /// Memory of the spool buffers part of which was lent and that are not back in the pool yet: being written, or
    /// still held by a client connection that has not sent all that was received there.
    /// </summary>
    public static long LentBytes => Volatile.Read(ref s_lentBytes);

    /// <summary>
    /// Completes when the fill is back within its <see cref="Buffers"/> buffers (at once when it is, or once the
    /// writer is closed): the copy loop awaits it before it receives more, so a writer that is behind (a slow or hung
    /// spool device, many fills) pauses this copy and no other connection of its loop. Any number of awaiters.
    /// </summary>
    public ValueTask WhenWritable()
    {
        lock (_lock)
        {
            if (_closed || WritableLocked)
            {
                return default;
            }

            if (_writable is null)
            {
                _writable = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _waitingSince = _time.GetTimestamp();
                if (_stall is null)
                {
                    _stall = _time.CreateTimer(static state => ((DirectSpoolWriter)state!).Stalled(), this, StallTimeout, Timeout.InfiniteTimeSpan);
                }
                else
                {
                    _stall.Change(StallTimeout, Timeout.InfiniteTimeSpan);
                }
            }

            return new ValueTask(_writable.Task);
        }
    }

    private bool WritableLocked => _queued + (_current != 0 ? 1 : 0) <= Buffers;

    private void WakeLocked()
    {
        if (_writable is { } writable)
        {
            _writable = null;
            _stall?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan); // a callback dispatched already still runs
            writable.SetResult(); // the continuations go to the thread pool
        }
    }

    /// <summary>
    /// The stall timer fired: if the copy loop's current wait has lasted <see cref="StallTimeout"/>, the fill is given
    /// up, which wakes it. Disarming the timer does not stop a callback already dispatched to the thread pool, and one
    /// run late may find the loop woken, or waiting again since (for less than the timeout): it is ignored.
    /// </summary>
    private void Stalled()
    {
        lock (_lock)
        {
            if (_writable is null || _closed || _time.GetElapsedTime(_waitingSince) < StallTimeout)
            {
                return;
            }
        }

        _fill.Abandon(FillAbandonReason.SpoolError,
            $"the spool device took none of this fill's writes for {StallTimeout.TotalSeconds:F0} s; the client is served on from the origin");
    }

    /// <summary>
    /// The body ended (the copy loop's thread): the last bytes are written, then <paramref name="then"/> runs on the
    /// writer thread, after every byte of this fill was written and published.
    /// </summary>
    public void Finish(Action then)
    {
        lock (_lock)
        {
            if (!_closed)
            {
                if (_filled > 0)
                {
                    SendLocked(then);
                }
                else
                {
                    FreeCurrentLocked();
                    Enqueue(new Job(this, 0, 0, 0, then));
                }

                CloseLocked();
                return;
            }
        }

        then(); // given up meanwhile: nothing more to write
    }

    /// <summary>The fill was given up (any thread): the writes still queued are skipped, and the spool is let go after them.</summary>
    public void Close()
    {
        lock (_lock)
        {
            if (!_closed)
            {
                FreeCurrentLocked();
                CloseLocked();
            }
        }
    }

    private void CloseLocked()
    {
        _closed = true;
        WakeLocked();
        _stall?.Dispose();
        // After every job already queued for this fill: the writer thread takes them in order.
        Enqueue(new Job(this, 0, 0, 0, null, Closing: true));
    }

    private void FreeCurrentLocked()
    {
        if (_current != 0)
        {
            Recycle(_current, _currentLent);
            _current = 0;
            _currentLent = null;
            _filled = 0;
        }
    }

    private void SendLocked(Action? then)
    {
        Enqueue(new Job(this, _current, _position, _filled, then, _currentLent));
        _queued++;
        _position += _filled;
        _current = 0;
        _currentLent = null;
        _filled = 0;
    }

    /// <summary>
    /// A buffer this writer is done with: kept for its next buffer, or, when part of it was lent, let go of (it goes
    /// back to the pool once the last loan is given back too).
    /// </summary>
    private void Recycle(nint buffer, LentBuffer? lent)
    {
        if (lent is null)
        {
            _spare.Add(buffer);
        }
        else
        {
            lent.Release();
        }
    }

    private static void Enqueue(Job job)
    {
        lock (Jobs)
        {
            Jobs.Enqueue(job);
            if (s_writerWaiting)
            {
                Monitor.Pulse(Jobs);
            }
        }
    }

    private static Queue<Job> StartWriterThread()
    {
        var jobs = new Queue<Job>();
        new Thread(() =>
        {
            while (true)
            {
                Job job;
                lock (jobs)
                {
                    while (!jobs.TryDequeue(out job))
                    {
                        s_writerWaiting = true;
                        Monitor.Wait(jobs);
                        s_writerWaiting = false;
                    }
                }

                job.Writer.Run(job);
            }
        })
        { IsBackground = true, Name = "sidekick spool writer" }.Start();
        return jobs;
    }

    private void Run(Job job)
    {
        if (job.Closing)
        {
            while (_spare.TryTake(out var spare))
            {
                s_buffers.Return(spare, _bufferSize);
            }

            _direct.Dispose();
            s_budget.Return(_bufferSize);
            _fill.DirectWriterDone();
            return;
        }

        if (job.Buffer != 0)
        {
            try
            {
                BeforeWriteForTests?.Invoke(_fill);
                if (!_fill.Abandoned)
                {
                    var padded = (job.Length + Block - 1) / Block * Block;
                    // The padding of the last buffer held an earlier fill's body (pooled buffers are not cleared): it
                    // is never read, but nothing of another object is to lie in this one's file either.
                    new Span<byte>((byte*)job.Buffer + job.Length, padded - job.Length).Clear();
                    RandomAccess.Write(_direct, new ReadOnlySpan<byte>((byte*)job.Buffer, padded), job.At);

                    _fill.Published(job.At, job.Length);
                }
            }
#pragma warning disable CA1031 // the one writer thread of the process must outlive any failed write
            catch (Exception ex)
#pragma warning restore CA1031
            {
                var refused = RefusesDirectIo(ex);
                if (refused)
                {
                    Volatile.Write(ref s_failed, true);
                }

                _fill.Abandon(FillAbandonReason.SpoolError, refused
                    ? $"O_DIRECT write failed ({ex.Message}); later fills write through the page cache"
                    : $"spool write failed ({ex.Message})");
            }
            finally
            {
                Recycle(job.Buffer, job.Lent);
                lock (_lock)
                {
                    _queued--;
                    if (WritableLocked)
                    {
                        WakeLocked();
                    }
                }
            }
        }

        try
        {
            job.Then?.Invoke();
        }
#pragma warning disable CA1031 // as above: one fill's completion must not stop every other fill's writes
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _fill.Abandon(FillAbandonReason.SpoolError, ex.Message);
        }
    }

    private readonly record struct Job(DirectSpoolWriter Writer, nint Buffer, long At, int Length, Action? Then, LentBuffer? Lent = null, bool Closing = false);

    /// <summary>
    /// A buffer part of which was lent: one reference for the writer (until it has written the buffer, or given it
    /// up) and one for each loan (until the output pipe has sent what it holds). The last one gives it back to the pool.
    /// </summary>
    private sealed class LentBuffer
    {
        private readonly nint _address;
        private readonly int _size;
        private int _references = 1;

        public LentBuffer(nint address, int size)
        {
            _address = address;
            _size = size;
            Interlocked.Add(ref s_lentBytes, size);
        }

        public SpoolLoan Loan(int offset, int length)
        {
            Interlocked.Increment(ref _references);
            return new SpoolLoan(this, (byte*)_address + offset, length);
        }

        public void Release()
        {
            if (Interlocked.Decrement(ref _references) == 0)
            {
                Interlocked.Add(ref s_lentBytes, -_size);
                s_buffers.Return(_address, _size);
            }
        }
    }

    /// <summary>A part of a <see cref="LentBuffer"/> as memory the output pipe can hold; disposed once, by its holder.</summary>
    private sealed class SpoolLoan(LentBuffer buffer, byte* start, int length) : MemoryManager<byte>
    {
        private int _returned;

        public override Span<byte> GetSpan() => new(start, length);

        // Native memory: it never moves.
        public override MemoryHandle Pin(int elementIndex = 0) => new(start + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _returned, 1) == 0)
            {
                buffer.Release();
            }
        }
    }
}
