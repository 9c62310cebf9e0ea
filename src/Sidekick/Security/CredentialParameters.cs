using System.Collections.Immutable;

namespace Sidekick.Security;

/// <summary>
/// Query parameters of signed URLs that are, or name, a credential: SigV4's and SigV2's (S3 presigned URLs),
/// Google Cloud Storage's signed URLs (X-Goog-*) and Azure's SAS (sig). One list for the two places that must
/// agree on it: the cache, where any one makes a request a credentialed one, and the output, where their values
/// are redacted; a name the cache knows as a credential and the logs print would leak it.
/// </summary>
internal static class CredentialParameters
{
    public static ImmutableArray<string> Names { get; } =
    [
        "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "AWSAccessKeyId",
        "X-Goog-Signature", "X-Goog-Credential", "X-Goog-Security-Token", "sig",
    ];

    /// <summary>Whether the (decoded) query parameter name is, or names, a credential; names compare case-insensitively.</summary>
    public static bool Contains(ReadOnlySpan<char> name)
    {
        foreach (var candidate in Names)
        {
            if (name.Equals(candidate, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }
}
