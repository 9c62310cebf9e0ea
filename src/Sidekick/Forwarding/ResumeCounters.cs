namespace Sidekick.Forwarding;

/// <summary>How a download resume ended (see <see cref="DownloadResume"/>).</summary>
internal enum ResumeOutcome
{
    /// <summary>The rest of the body came from another backend; the client got the whole object.</summary>
    Completed,

    /// <summary>Another backend answered 206 under a different validator: two versions are never spliced.</summary>
    ValidatorMismatch,

    /// <summary>Another backend would not continue (412, a 200, a different range or length).</summary>
    Refused,

    /// <summary>No backend was left to continue from.</summary>
    NoBackend,

    /// <summary>
    /// The attempts ran out on transport failures, a resuming backend stayed silent past --backend-timeout, or the
    /// client went away.
    /// </summary>
    Failed,
}

/// <summary>Resumes by outcome, for the metrics (sidekick_download_resumes_total).</summary>
internal sealed class ResumeCounters
{
    private readonly long[] _counts = new long[Enum.GetValues<ResumeOutcome>().Length];

    public void Add(ResumeOutcome outcome) => Interlocked.Increment(ref _counts[(int)outcome]);

    public long Of(ResumeOutcome outcome) => Volatile.Read(ref _counts[(int)outcome]);
}
