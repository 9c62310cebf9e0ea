using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;

namespace Sidekick.Forwarding;

/// <summary>
/// Builds an async method's <see cref="ValueTask{TResult}"/> on a state machine box taken from a pool shared
/// by all threads, sized for the exchanges in flight. .NET's <see cref="PoolingAsyncValueTaskMethodBuilder{TResult}"/>
/// keeps one box per thread and one per core: an exchange starts on one event loop and often ends on the
/// other, with dozens in flight per loop, so almost every exchange missed that pool and allocated its box
/// (about 210 bytes per request at 1 KiB x 32). The box goes back to the pool when its result is read, as
/// with .NET's builder: a task built here is awaited once.
/// </summary>
/// <remarks>
/// The method runs synchronously until its first incomplete await, as with any async method; only then is
/// the state machine copied into a box. A method that completes synchronously takes no box.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1000", Justification = "The compiler calls Create on the builder type.")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "The compiler calls the builder's members on an instance.")]
internal struct SharedPoolValueTaskBuilder<TResult>
{
    private Box? _box;
    private TResult _result;
    private Exception? _exception;

    public static SharedPoolValueTaskBuilder<TResult> Create() => default;

    public readonly ValueTask<TResult> Task =>
        _box is { } box ? new ValueTask<TResult>(box, box.Version)
        : _exception is { } exception ? ValueTask.FromException<TResult>(exception)
        : new ValueTask<TResult>(_result);

    /// <summary>The task without its result, for <see cref="SharedPoolValueTaskBuilder"/>.</summary>
    internal readonly ValueTask UntypedTask =>
        _box is { } box ? new ValueTask(box, box.Version)
        : _exception is { } exception ? ValueTask.FromException(exception)
        : default;

    // Start saves and restores the caller's execution and synchronization contexts: the same for every builder.
    public void Start<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine => AsyncTaskMethodBuilder.Create().Start(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine)
    {
        // Only boxed state machines of the default builders call this; the box here holds the struct itself.
    }

    public void SetResult(TResult result)
    {
        if (_box is { } box)
        {
            box.SetResult(result);
        }
        else
        {
            _result = result;
        }
    }

    public void SetException(Exception exception)
    {
        if (_box is { } box)
        {
            box.SetException(exception);
        }
        else
        {
            _exception = exception;
        }
    }

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion
        where TStateMachine : IAsyncStateMachine => awaiter.OnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion
        where TStateMachine : IAsyncStateMachine => awaiter.UnsafeOnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    /// <summary>
    /// The box that runs the rest of the method: taken from the pool at the first incomplete await (the
    /// state machine, this builder included, is copied into it after the builder points at it), the same
    /// box at every later one. The execution context is captured at each await, as the default builders do.
    /// </summary>
    private StateMachineBox<TStateMachine> BoxFor<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine
    {
        if (_box is not StateMachineBox<TStateMachine> box)
        {
            box = StateMachineBox<TStateMachine>.Rent();
            _box = box;
            box.StateMachine = stateMachine;
        }

        box.Context = ExecutionContext.Capture();
        return box;
    }

    /// <summary>The task's source while the method runs asynchronously.</summary>
    private abstract class Box : IValueTaskSource<TResult>, IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<TResult> _source;

        protected Box() => MoveNextAction = MoveNext;

        public Action MoveNextAction { get; }

        public short Version => _source.Version;

        public void SetResult(TResult result) => _source.SetResult(result);

        public void SetException(Exception exception) => _source.SetException(exception);

        public ValueTaskSourceStatus GetStatus(short token) => _source.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _source.OnCompleted(continuation, state, token, flags);

        /// <summary>Reads the result once; the box then goes back to the pool (a second read fails on the version).</summary>
        public TResult GetResult(short token)
        {
            if (token != _source.Version)
            {
                // A task read twice: it throws, and the box, perhaps serving another call by now, stays as it is.
                return _source.GetResult(token);
            }

            try
            {
                return _source.GetResult(token);
            }
            finally
            {
                _source.Reset();
                Return();
            }
        }

        void IValueTaskSource.GetResult(short token) => GetResult(token);

        protected abstract void MoveNext();

        protected abstract void Return();
    }

    private sealed class StateMachineBox<TStateMachine> : Box
        where TStateMachine : IAsyncStateMachine
    {
        /// <summary>Boxes kept for reuse: enough for the exchanges in flight at 256 connections; more are dropped.</summary>
        private const int Capacity = 256;

        private static readonly ContextCallback RunStateMachine = static box => ((StateMachineBox<TStateMachine>)box!).StateMachine.MoveNext();
        private static readonly StateMachineBox<TStateMachine>?[] Pool = new StateMachineBox<TStateMachine>?[Capacity];
        private static readonly Lock PoolLock = new();
        private static int s_pooled;

        public TStateMachine StateMachine = default!;

        public ExecutionContext? Context { get; set; }

        public static StateMachineBox<TStateMachine> Rent()
        {
            lock (PoolLock)
            {
                if (s_pooled > 0)
                {
                    var box = Pool[--s_pooled]!;
                    Pool[s_pooled] = null;
                    return box;
                }
            }

            return new StateMachineBox<TStateMachine>();
        }

        protected override void MoveNext()
        {
            if (Context is { } context)
            {
                ExecutionContext.Run(context, RunStateMachine, this);
            }
            else
            {
                // The flow of the execution context was suppressed at the await.
                StateMachine.MoveNext();
            }
        }

        protected override void Return()
        {
            // Nothing the finished method held is kept alive by the pool.
            StateMachine = default!;
            Context = null;
            lock (PoolLock)
            {
                if (s_pooled < Capacity)
                {
                    Pool[s_pooled++] = this;
                }
            }
        }
    }
}

/// <summary>
/// <see cref="SharedPoolValueTaskBuilder{TResult}"/> for methods returning a <see cref="ValueTask"/>: the
/// same boxes and pool, with no result.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "The compiler calls the builder's members on an instance.")]
internal struct SharedPoolValueTaskBuilder
{
    private SharedPoolValueTaskBuilder<NoResult> _builder;

    public static SharedPoolValueTaskBuilder Create() => default;

    public readonly ValueTask Task => _builder.UntypedTask;

    public void Start<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine => _builder.Start(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine) => _builder.SetStateMachine(stateMachine);

    public void SetResult() => _builder.SetResult(default);

    public void SetException(Exception exception) => _builder.SetException(exception);

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitOnCompleted(ref awaiter, ref stateMachine);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitUnsafeOnCompleted(ref awaiter, ref stateMachine);

    /// <summary>The result type of a method that has none.</summary>
    internal readonly struct NoResult;
}
