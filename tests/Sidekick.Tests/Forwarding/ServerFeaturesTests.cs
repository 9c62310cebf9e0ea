using Microsoft.AspNetCore.Http.Features;
using Sidekick.Forwarding;

namespace Sidekick.Tests.Forwarding;

public sealed class ServerFeaturesTests
{
    [Fact]
    public void Each_read_returns_the_feature_the_collection_holds_now_whichever_type_answered_before()
    {
        var features = new FeatureCollection();
        var first = new HttpRequestFeature { RawTarget = "/first" };
        features.Set<IHttpRequestFeature>(first);
        Assert.Same(first, ServerFeatures.Request(features));

        // Another object of the type that passed the check, then one of another type: each is what the collection holds.
        var second = new HttpRequestFeature { RawTarget = "/second" };
        features.Set<IHttpRequestFeature>(second);
        Assert.Same(second, ServerFeatures.Request(features));
        var other = new OtherRequestFeature();
        features.Set<IHttpRequestFeature>(other);
        Assert.Same(other, ServerFeatures.Request(features));
        Assert.Same(second, ServerFeatures.Request(new FeatureCollection { [typeof(IHttpRequestFeature)] = second }));

        features.Set<IHttpRequestFeature>(null);
        Assert.Null(ServerFeatures.Request(features));
    }

    [Fact]
    public void An_object_of_the_wrong_type_under_a_feature_is_never_handed_out_as_that_feature()
    {
        // The indexer stores whatever it is given; after a good read of one type, an object of another must
        // still be checked rather than reinterpreted.
        var features = new FeatureCollection();
        features.Set<IHttpRequestBodyDetectionFeature>(new BodyDetection(canHaveBody: false));
        Assert.False(ServerFeatures.CanHaveBody(features));

        features[typeof(IHttpRequestBodyDetectionFeature)] = new HttpRequestFeature();
        Assert.Null(ServerFeatures.BodyDetection(features));
        Assert.True(ServerFeatures.CanHaveBody(features)); // unknown: may have content, as ASP.NET assumes

        features[typeof(IHttpRequestBodyDetectionFeature)] = "not a feature";
        Assert.Null(ServerFeatures.BodyDetection(features));
    }

    private sealed class OtherRequestFeature : HttpRequestFeature;

    private sealed class BodyDetection(bool canHaveBody) : IHttpRequestBodyDetectionFeature
    {
        public bool CanHaveBody { get; } = canHaveBody;
    }
}
