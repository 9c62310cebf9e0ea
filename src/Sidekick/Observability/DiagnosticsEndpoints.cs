using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Runtime;
using System.Text.Json;

namespace Sidekick.Observability;

/// <summary>
/// What <c>--pprof ADDR</c> serves on its own listener: the in-process view a .NET operator needs when
/// something is slow or leaking. For CPU traces and heap dumps use dotnet-trace and dotnet-gcdump against the
/// process id (the diagnostics IPC channel is on); see docs/observability.md.
/// </summary>
internal static class DiagnosticsEndpoints
{
    /// <summary>
    /// 1 while a /debug/events capture runs, in the whole process: creating and disposing EventListeners on
    /// several threads at once deadlocks inside the runtime (EventListener.Dispose and the EventPipe dispatcher
    /// take the same two locks in opposite orders), which stops every request, so a second capture is refused.
    /// </summary>
    private static int s_capturing;

    /// <summary>When the running capture ends, in <see cref="TimeProvider.GetTimestamp"/> units (for Retry-After).</summary>
    private static long s_captureEnds;

    /// <summary>Whether a /debug/events capture is running (for tests).</summary>
    internal static bool Capturing => Volatile.Read(ref s_capturing) != 0;

    /// <param name="context">The request, on the --pprof or admin listener.</param>
    /// <param name="time">The clock a /debug/events capture waits on (the server's).</param>
    public static Task HandleAsync(HttpContext context, TimeProvider time) => context.Request.Path.Value switch
    {
        "/debug/gc" => Json(context, WriteGc),
        "/debug/threadpool" => Json(context, WriteThreadPool),
        "/debug/process" => Json(context, WriteProcess),
        "/debug/events" => EventsAsync(context, time),
        "/debug/gc/collect" when HttpMethods.IsPost(context.Request.Method) => IsLocalClient(context) ? CollectAsync(context) : Refuse(context),
        _ => Index(context),
    };

    private static Task Index(HttpContext context)
    {
        context.Response.StatusCode = context.Request.Path == "/" || context.Request.Path == "/debug" ? 200 : 404;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync("""
            sidekick diagnostics
              GET  /debug/gc              GC and heap statistics (JSON)
              GET  /debug/threadpool      thread pool threads, queue length, completed items (JSON)
              GET  /debug/process         CPU time, working set, handles, uptime (JSON)
              GET  /debug/events?seconds=N  runtime event counts (GC, allocation ticks, contention, exceptions) over N seconds; one at a time
              POST /debug/gc/collect      force a full blocking GC (then compare /debug/gc); from this host only
            For CPU traces and heap dumps: dotnet-trace collect -p PID, dotnet-gcdump collect -p PID, dotnet-counters monitor -p PID --counters Sidekick,System.Runtime

            """);
    }

    private static async Task Json(HttpContext context, Action<Utf8JsonWriter> write)
    {
        context.Response.ContentType = "application/json";
        await using var json = new Utf8JsonWriter(context.Response.Body, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        write(json);
        json.WriteEndObject();
    }

    private static void WriteGc(Utf8JsonWriter json)
    {
        var info = GC.GetGCMemoryInfo();
        json.WriteNumber("heapSizeBytes", info.HeapSizeBytes);
        json.WriteNumber("fragmentedBytes", info.FragmentedBytes);
        json.WriteNumber("committedBytes", info.TotalCommittedBytes);
        json.WriteNumber("totalAllocatedBytes", GC.GetTotalAllocatedBytes());
        json.WriteNumber("totalMemoryBytes", GC.GetTotalMemory(false));
        json.WriteNumber("gen0Collections", GC.CollectionCount(0));
        json.WriteNumber("gen1Collections", GC.CollectionCount(1));
        json.WriteNumber("gen2Collections", GC.CollectionCount(2));
        json.WriteNumber("pauseTimePercentage", info.PauseTimePercentage);
        json.WriteNumber("totalPauseMs", GC.GetTotalPauseDuration().TotalMilliseconds);
        json.WriteBoolean("serverGC", GCSettings.IsServerGC);
        json.WriteString("latencyMode", GCSettings.LatencyMode.ToString());
        // Collections sidekick forced after bursts of closed client connections (Hosting/HeapCompactor.cs).
        json.WriteNumber("compactionsAfterClosedConnections", Hosting.HeapCompactor.Shared.Compactions);
        // Sizes after the last collection, per generation: where a large heap sits (the pinned heap holds
        // Kestrel's I/O buffers).
        json.WriteStartObject("generations");
        ReadOnlySpan<string> names = ["gen0", "gen1", "gen2", "loh", "poh"];
        var generations = info.GenerationInfo;
        for (var i = 0; i < names.Length && i < generations.Length; i++)
        {
            json.WriteStartObject(names[i]);
            json.WriteNumber("sizeAfterBytes", generations[i].SizeAfterBytes);
            json.WriteNumber("fragmentationAfterBytes", generations[i].FragmentationAfterBytes);
            json.WriteEndObject();
        }

        json.WriteEndObject();
    }

    private static void WriteThreadPool(Utf8JsonWriter json)
    {
        ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
        ThreadPool.GetMaxThreads(out var maxWorkers, out var maxIo);
        json.WriteNumber("threadCount", ThreadPool.ThreadCount);
        json.WriteNumber("pendingWorkItems", ThreadPool.PendingWorkItemCount);
        json.WriteNumber("completedWorkItems", ThreadPool.CompletedWorkItemCount);
        json.WriteNumber("minWorkerThreads", minWorkers);
        json.WriteNumber("minIoThreads", minIo);
        json.WriteNumber("maxWorkerThreads", maxWorkers);
        json.WriteNumber("maxIoThreads", maxIo);
        json.WriteNumber("lockContentions", Monitor.LockContentionCount);
    }

    private static void WriteProcess(Utf8JsonWriter json)
    {
        using var process = Process.GetCurrentProcess();
        json.WriteNumber("pid", Environment.ProcessId);
        json.WriteNumber("workingSetBytes", process.WorkingSet64);
        json.WriteNumber("privateBytes", process.PrivateMemorySize64);
        json.WriteNumber("userCpuMs", process.UserProcessorTime.TotalMilliseconds);
        json.WriteNumber("systemCpuMs", process.PrivilegedProcessorTime.TotalMilliseconds);
        json.WriteNumber("threads", process.Threads.Count);
        json.WriteNumber("handles", process.HandleCount);
        json.WriteNumber("uptimeSeconds", (DateTime.Now - process.StartTime).TotalSeconds);
        json.WriteNumber("processorCount", Environment.ProcessorCount);
    }

    /// <summary>
    /// A full blocking collection pauses every request: only a client on this host may ask for one, even when the
    /// listener is reachable from the network (--pprof :1337 listens on every interface, as upstream's did).
    /// </summary>
    /// <summary>
    /// A loopback peer naming a loopback host: a web page on this host's browser (a form POST needs no permission from
    /// us) names its own host, so it cannot force full blocking collections.
    /// </summary>
    private static bool IsLocalClient(HttpContext context) =>
        context.Connection.RemoteIpAddress is { } client && System.Net.IPAddress.IsLoopback(client.IsIPv4MappedToIPv6 ? client.MapToIPv4() : client) &&
        Hosting.SideListener.NamesNoOtherHost(context.Request.Host);

    private static Task Refuse(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status403Forbidden;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync("POST /debug/gc/collect is only accepted from this host (a loopback address, naming localhost or a loopback address)\n");
    }

    private static async Task CollectAsync(HttpContext context)
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        await Json(context, WriteGc);
    }

    private static async Task EventsAsync(HttpContext context, TimeProvider time)
    {
        var seconds = int.TryParse(context.Request.Query["seconds"], out var s) ? Math.Clamp(s, 1, 60) : 5;
        if (Interlocked.CompareExchange(ref s_capturing, 1, 0) != 0)
        {
            await Busy(context, time);
            return;
        }

        Dictionary<string, long> counts;
        try
        {
            Volatile.Write(ref s_captureEnds, time.GetTimestamp() + (seconds * time.TimestampFrequency));
            // The listener is created and disposed inside the gate: both take the runtime's locks.
            using var listener = new RuntimeEventCounter();
            await Task.Delay(TimeSpan.FromSeconds(seconds), time, context.RequestAborted);
            counts = listener.Snapshot();
        }
        finally
        {
            Volatile.Write(ref s_capturing, 0);
        }

        await Json(context, json =>
        {
            json.WriteNumber("seconds", seconds);
            json.WriteStartObject("events");
            foreach (var (name, count) in counts.OrderByDescending(c => c.Value))
            {
                json.WriteNumber(name, count);
            }

            json.WriteEndObject();
        });
    }

    private static Task Busy(HttpContext context, TimeProvider time)
    {
        var left = time.GetElapsedTime(time.GetTimestamp(), Volatile.Read(ref s_captureEnds));
        context.Response.StatusCode = StatusCodes.Status429TooManyRequests;
        context.Response.Headers.RetryAfter = Math.Clamp((long)Math.Ceiling(left.TotalSeconds), 1, 60).ToString(System.Globalization.CultureInfo.InvariantCulture);
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync("a /debug/events capture is already running: one at a time, try again when it ends\n");
    }

    /// <summary>Counts runtime events (GC, allocation ticks, contention, exceptions) while it is alive.</summary>
    private sealed class RuntimeEventCounter : EventListener
    {
        private readonly Dictionary<string, long> _counts = [];

        public Dictionary<string, long> Snapshot()
        {
            lock (_counts)
            {
                return new Dictionary<string, long>(_counts);
            }
        }

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
            {
                // GC (0x1), contention (0x4000), exceptions (0x8000); verbose level includes allocation ticks.
                EnableEvents(source, EventLevel.Verbose, (EventKeywords)(0x1 | 0x4000 | 0x8000));
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            var name = eventData.EventName ?? eventData.EventId.ToString(System.Globalization.CultureInfo.InvariantCulture);
            lock (_counts)
            {
                _counts[name] = _counts.GetValueOrDefault(name) + 1;
            }
        }
    }
}
