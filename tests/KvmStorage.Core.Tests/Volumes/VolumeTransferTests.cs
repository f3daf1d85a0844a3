using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Tests.Support;
using KvmStorage.Core.Volumes;
using Xunit;

namespace KvmStorage.Core.Tests.Volumes;

/// <summary>
/// A transfer hands the converter every option its caller gave, except those the operation itself decides (where the
/// output goes, its owner, its backing file): a caller that skips the free-space check is not checked anyway.
/// </summary>
public sealed class VolumeTransferTests : IDisposable
{
    // A sparse qcow2 of 2^60 bytes with 2 MiB clusters is a few MiB on disk, but the free-space check estimates the
    // metadata of the image fully allocated: about 5 TiB, more than a test machine has free.
    private const ulong HugeSize = 1UL << 60;
    private const uint BigClusters = 2 * 1024 * 1024;

    private readonly TempDirectory root = new();
    private readonly OfflineHost host;
    private readonly VolumeTransfer transfer;

    public VolumeTransferTests()
    {
        host = new OfflineHost(new HostPaths(root.Path));
        host.DefinePool(new PoolSpec { Type = PoolType.Dir, Name = "p", TargetPath = "/srv/p" }.ToDefinition(), new PoolDefineOptions { Build = true });
        transfer = new VolumeTransfer(host);
    }

    public void Dispose() => root.Dispose();

    [Fact]
    public void Replace_keeps_the_callers_SkipSpaceCheck()
    {
        StorageVolume huge = Create("huge.qcow2", HugeSize, backing: null);
        var options = new ConvertOptions { Format = ImageFormat.Qcow2, ClusterSize = BigClusters };
        AssertTooBigForTheCheck(() => transfer.Replace(huge, options, null, CancellationToken.None));

        StorageVolume replaced = transfer.Replace(huge, options with { SkipSpaceCheck = true }, null, CancellationToken.None);

        Assert.Equal(huge.Path, replaced.Path);
        Assert.Equal(HugeSize, replaced.Capacity);
    }

    [Fact]
    public void CopyKeepingBacking_keeps_the_callers_SkipSpaceCheck()
    {
        StorageVolume huge = Create("huge.qcow2", HugeSize, backing: null);
        StorageVolume overlay = Create("overlay.qcow2", size: null, backing: huge);
        string destination = transfer.NewVolumePath("p", "copy.qcow2");
        var options = new ConvertOptions { Format = ImageFormat.Qcow2 };
        AssertTooBigForTheCheck(() => transfer.CopyKeepingBacking(overlay, destination, options, null, CancellationToken.None));

        StorageVolume copy = transfer.CopyKeepingBacking(overlay, destination, options with { SkipSpaceCheck = true }, null, CancellationToken.None);

        Assert.Equal(huge.Path, copy.BackingPath);
        Assert.Equal(HugeSize, copy.Capacity);
    }

    private StorageVolume Create(string name, ulong? size, StorageVolume? backing) => host.CreateVolume(
        new VolumeCreateRequest
        {
            Pool = "p",
            Name = name,
            Image = new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = size, ClusterSize = BigClusters, BackingFormat = backing is null ? null : ImageFormat.Qcow2 },
            BackingPath = backing?.Path,
        },
        null,
        CancellationToken.None);

    /// <summary>The premise: without the caller's skip, the check refuses this conversion.</summary>
    private static void AssertTooBigForTheCheck(Action convert)
    {
        var refused = Assert.Throws<KvmStorageException>(convert);
        Assert.Equal(ConvertErrorIds.InsufficientSpace, refused.ErrorId);
    }
}
