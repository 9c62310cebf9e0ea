using System.Xml;
using Sidekick.Forwarding;

namespace Sidekick.Caching;

/// <summary>
/// An S3 DeleteObjects request (<c>POST &lt;bucket&gt;?delete</c>), whose objects are named in its body
/// (<c>&lt;Delete&gt;&lt;Object&gt;&lt;Key&gt;k&lt;/Key&gt;…</c>), not in its target: every bulk delete (aws s3 rm
/// --recursive, s3cmd del, mc rm -r, rclone purge) goes this way. The body is copied as it streams to the origin, up to
/// <see cref="MaxBodyBytes"/>, so that the keys its success deleted can be invalidated; the request's Body is given back
/// when this is disposed.
/// </summary>
internal sealed class DeleteObjects : IDisposable
{
    /// <summary>1,000 keys (S3's limit) of up to 1,024 bytes each, XML-escaped: about 1.1 MiB at most.</summary>
    internal const int MaxBodyBytes = 2 * 1024 * 1024;

    /// <summary>S3 refuses a request with more (MalformedXML).</summary>
    internal const int MaxKeys = 1_000;

    /// <summary>
    /// What all the copies in progress may hold together: 16 bodies at the bound, hundreds of usual ones (a batch of
    /// 1,000 short keys is about 60 KB). A copy that does not fit is given up, as one over the bound is.
    /// </summary>
    internal const long AllCopiesBytes = 32L * 1024 * 1024;

    private readonly HttpRequest _request;
    private readonly CapturingReadStream _body;

    private DeleteObjects(HttpRequest request, ReplayBudget copies)
    {
        _request = request;
        _body = new CapturingReadStream(request.Body, MaxBodyBytes, copies);
        request.Body = _body; // both forwarding paths read the body through HttpRequest.Body
    }

    /// <summary>Starts copying the body of a DeleteObjects request, its bytes reserved in <paramref name="copies"/>; null for any other request.</summary>
    public static DeleteObjects? Watch(HttpRequest request, ReplayBudget copies) =>
        HttpMethods.IsPost(request.Method) && request.QueryString.HasValue && request.Query.ContainsKey("delete") ? new DeleteObjects(request, copies) : null;

    /// <summary>
    /// The keys the body names (entities decoded), or null when it was not copied whole (over the bound or the budget),
    /// is not such XML, or names too many.
    /// </summary>
    public IReadOnlyList<string>? Keys()
    {
        if (_body.Overflowed || _body.Captured is not { Array: { } array } captured)
        {
            return null;
        }

        var settings = new XmlReaderSettings
        {
            // The body is the client's: no DTD (no entity expansion, no external fetch), and bounded.
            DtdProcessing = DtdProcessing.Prohibit,
            XmlResolver = null,
            MaxCharactersInDocument = MaxBodyBytes,
            MaxCharactersFromEntities = 1024,
            IgnoreComments = true,
            IgnoreProcessingInstructions = true,
        };
        var keys = new List<string>();
        try
        {
            using var reader = XmlReader.Create(new MemoryStream(array, captured.Offset, captured.Count, writable: false), settings);
            while (reader.Read())
            {
                // Any Key element: in this body only an Object's; one elsewhere only invalidates more.
                while (reader is { NodeType: XmlNodeType.Element, LocalName: "Key" })
                {
                    if (keys.Count == MaxKeys)
                    {
                        return null;
                    }

                    keys.Add(reader.ReadElementContentAsString()); // leaves the reader on the next node
                }
            }
        }
        catch (XmlException)
        {
            return null;
        }

        return keys;
    }

    public void Dispose()
    {
        _body.Release();
        if (ReferenceEquals(_request.Body, _body))
        {
            _request.Body = _body.Inner;
        }
    }
}
