using System.Security.Cryptography;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Chains;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// Commits (Merge-Volume's engine) against qemu as the oracle: chains of depth 1 to 3 over raw and qcow2 bases, data
/// written with qemu-io at different offsets in each layer. Before: the overlay's guest view is saved as raw. After:
/// <c>qemu-img compare</c> shows the overlay's view unchanged and the base reading the old overlay view (and what
/// <c>qemu-img commit</c> makes of a copy of the same chain), <c>qemu-img check</c> clean on every qcow2.
/// </summary>
[Collection(nameof(ImageSnapshotsTests))]
public sealed class ImageCommitterTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, int, bool, OverlayDisposition> Chains => new()
    {
        { "raw", 1, false, OverlayDisposition.Empty },
        { "qcow2", 1, false, OverlayDisposition.Empty },
        { "raw", 1, false, OverlayDisposition.Remove },
        { "qcow2", 2, false, OverlayDisposition.Empty },
        { "raw", 2, true, OverlayDisposition.Empty },
        { "qcow2", 3, true, OverlayDisposition.Empty },
        { "raw", 3, true, OverlayDisposition.Remove },
        { "qcow2", 3, false, OverlayDisposition.Keep },
    };

    [SkippableTheory]
    [MemberData(nameof(Chains))]
    public void Commit_keeps_the_overlay_view_and_moves_it_into_the_base(string baseFormat, int depth, bool toBottom, OverlayDisposition disposition)
    {
        string[] chain = BuildChain(temp.Path, baseFormat, depth);
        string overlay = chain[^1];
        string basePath = toBottom ? chain[0] : chain[^2];
        string before = SaveView(overlay, "before.raw");

        // qemu-img commit on a copy of the chain is the second oracle.
        string copyDir = Directory.CreateDirectory(temp.Combine("qemu")).FullName;
        foreach (string file in chain)
        {
            File.Copy(file, Path.Combine(copyDir, Path.GetFileName(file)));
        }

        ExternalTool.RunChecked("qemu-img", ["commit", "-q", .. toBottom ? new[] { "-b", Path.GetFileName(basePath) } : [], Path.Combine(copyDir, Path.GetFileName(overlay))]);

        ImageCommitResult result = ImageCommitter.Commit(overlay, new ImageCommitOptions { BasePath = toBottom ? basePath : null, Overlay = disposition });
        Assert.Equal(basePath, result.BasePath);
        Assert.True(result.BytesCommitted > 0);

        AssertSame(basePath, before);
        AssertSame(basePath, Path.Combine(copyDir, Path.GetFileName(basePath)));
        int layersAbove = Array.IndexOf(chain, basePath) + 1;
        switch (disposition)
        {
            case OverlayDisposition.Remove:
                Assert.All(chain[layersAbove..], f => Assert.False(File.Exists(f), $"{f} was not removed"));
                Assert.Equal(chain.Length - layersAbove, result.Removed.Count);
                break;
            case OverlayDisposition.Empty:
                AssertSame(overlay, before);
                Assert.All(chain[layersAbove..], AssertEmpty);
                break;
            default:
                AssertSame(overlay, before);
                Assert.Empty(result.Emptied);
                break;
        }

        foreach (string file in chain.Where(f => File.Exists(f) && ImageInspector.DetectFormat(f) == ImageFormat.Qcow2))
        {
            QemuOracle.AssertCheckClean(file);
        }
    }

    [SkippableTheory]
    [InlineData("raw", "2M")]
    [InlineData("qcow2", "2M")]
    [InlineData("qcow2", "6M")]
    public void A_base_of_another_size_grows_to_the_overlay_or_keeps_its_size(string baseFormat, string baseSize)
    {
        ExternalTool.Require("qemu-io");
        string basePath = temp.Combine("base." + baseFormat);
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", baseFormat, basePath, baseSize);
        ExternalTool.RunChecked("qemu-io", "-f", baseFormat, "-c", "write -P 0x5a 0 1M", basePath);
        string overlay = temp.Combine("top.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base." + baseFormat, "-F", baseFormat, overlay, "4M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x5b 1536k 2M", overlay);
        string before = SaveView(overlay, "before.raw");
        ulong oldBaseSize = ImageInspector.Inspect(basePath).VirtualSize;

        ImageCommitter.Commit(overlay, new ImageCommitOptions());

        AssertSame(overlay, before);
        ulong newBaseSize = ImageInspector.Inspect(basePath).VirtualSize;
        Assert.Equal(Math.Max(oldBaseSize, 4UL << 20), newBaseSize);
        ExternalTool.RunChecked("qemu-io", "-f", baseFormat, "-r", "-c", "read -P 0x5a 0 1M", "-c", "read -P 0x5b 1536k 2M", basePath);
        if (baseFormat == "qcow2")
        {
            QemuOracle.AssertCheckClean(basePath);
        }
    }

    [SkippableFact]
    public void Committing_an_overlay_that_holds_nothing_changes_nothing_and_succeeds()
    {
        // What a commit killed after emptying the overlay leaves: the re-run finds nothing to copy.
        string[] chain = BuildChain(temp.Path, "qcow2", 1);
        string overlay = chain[^1];
        ImageCommitter.Commit(overlay, new ImageCommitOptions());
        AssertEmpty(overlay);
        string before = SaveView(overlay, "before.raw");
        string baseView = SaveView(chain[0], "base-before.raw");

        ImageCommitResult again = ImageCommitter.Commit(overlay, new ImageCommitOptions());

        Assert.Equal(0UL, again.BytesCommitted);
        AssertSame(overlay, before);
        AssertSame(chain[0], baseView);
        QemuOracle.AssertCheckClean(overlay);
        QemuOracle.AssertCheckClean(chain[0]);
    }

    [SkippableFact]
    public void A_cancelled_commit_leaves_both_images_valid_and_the_overlay_view_unchanged()
    {
        string[] chain = BuildChain(temp.Path, "qcow2", 1);
        string overlay = chain[^1];
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x6c 4M 12M", overlay);
        string before = SaveView(overlay, "before.raw");
        byte[] overlayBytes = File.ReadAllBytes(overlay);
        using var cancel = new CancellationTokenSource();
        var progress = new CancelAfterFirstChunk(cancel);

        Assert.ThrowsAny<OperationCanceledException>(() => ImageCommitter.Commit(overlay, new ImageCommitOptions(), progress, cancel.Token));

        Assert.True(progress.Reports >= 2, "the commit never started");
        Assert.Equal(overlayBytes, File.ReadAllBytes(overlay));
        AssertSame(overlay, before);
        QemuOracle.AssertCheckClean(overlay);
        QemuOracle.AssertCheckClean(chain[0]);

        // Done again, it completes.
        ImageCommitter.Commit(overlay, new ImageCommitOptions());
        AssertSame(overlay, before);
        AssertSame(chain[0], before);
    }

    [SkippableFact]
    public void Refusals_change_nothing()
    {
        string[] chain = BuildChain(temp.Path, "qcow2", 2);
        string overlay = chain[^1];
        string stranger = temp.Combine("stranger.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", stranger, "4M");
        string vmdkBase = temp.Combine("vbase.vmdk");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vmdk", vmdkBase, "4M");
        string vmdkTop = temp.Combine("vtop.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", "vbase.vmdk", "-F", "vmdk", vmdkTop, "4M");
        Dictionary<string, string> before = Hashes();

        AssertRefused(MergeErrorIds.NoBackingFile, ErrorKind.InvalidOperation, () => ImageCommitter.Commit(stranger, new ImageCommitOptions()));
        AssertRefused(MergeErrorIds.NoBackingFile, ErrorKind.InvalidOperation, () => ImageCommitter.Commit(chain[0], new ImageCommitOptions()));
        AssertRefused(MergeErrorIds.BaseNotInChain, ErrorKind.InvalidArgument, () => ImageCommitter.Commit(overlay, new ImageCommitOptions { BasePath = stranger }));
        AssertRefused(MergeErrorIds.BaseNotInChain, ErrorKind.InvalidArgument, () => ImageCommitter.Commit(overlay, new ImageCommitOptions { BasePath = overlay }));
        AssertRefused(MergeErrorIds.BaseFormatNotSupported, ErrorKind.NotSupported, () => ImageCommitter.Commit(vmdkTop, new ImageCommitOptions()));
        AssertRefused(ImageErrorIds.ImageNotFound, ErrorKind.NotFound, () => ImageCommitter.Commit(temp.Combine("missing.qcow2"), new ImageCommitOptions()));

        File.SetUnixFileMode(chain[1], UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        AssertRefused(MergeErrorIds.ImageNotWritable, ErrorKind.PermissionDenied, () => ImageCommitter.Commit(overlay, new ImageCommitOptions()));
        File.SetUnixFileMode(chain[1], UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        // A dirty qcow2 base is refused by the writer's checks, before anything is written.
        byte[] header = File.ReadAllBytes(chain[1]);
        header[79] |= 1;
        File.WriteAllBytes(chain[1], header);
        before = Hashes();
        AssertRefused(ImageErrorIds.ImageDirty, ErrorKind.InvalidOperation, () => ImageCommitter.Commit(overlay, new ImageCommitOptions()));
        Assert.Equal(before, Hashes());
    }

    private void AssertRefused(string errorId, ErrorKind kind, Action action)
    {
        Dictionary<string, string> before = Hashes();
        KvmStorageException e = Assert.Throws<KvmStorageException>(action);
        Assert.Equal(errorId, e.ErrorId);
        Assert.Equal(kind, e.Kind);
        Assert.Equal(before, Hashes());
    }

    private Dictionary<string, string> Hashes() => Directory.EnumerateFiles(temp.Path, "*", SearchOption.AllDirectories)
        .ToDictionary(f => f, f => System.Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))) + System.Convert.ToString((int)File.GetUnixFileMode(f), 8));

    /// <summary>base (raw or qcow2) then <paramref name="depth"/> qcow2 overlays, each with data at its own offsets.</summary>
    internal static string[] BuildChain(string folder, string baseFormat, int depth)
    {
        ExternalTool.Require("qemu-io");
        var chain = new List<string> { Path.Combine(folder, "base." + baseFormat) };
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", baseFormat, chain[0], "16M");
        ExternalTool.RunChecked("qemu-io", "-f", baseFormat, "-c", "write -P 0xa0 0 6M", "-c", "write -P 0xa9 12M 1M", chain[0]);
        string[][] writes =
        [
            ["write -P 0xa1 512k 1M", "write -P 0xb1 7M 64k"],
            ["write -P 0xa2 1025k 300k", "write -z 3M 64k", "write -P 0xb2 12M 4k"],
            ["write -P 0xa3 2M 513k", "write -z 5M 1M", "write -P 0xb3 700k 1"],
        ];
        for (int i = 1; i <= depth; i++)
        {
            string layer = Path.Combine(folder, $"layer{i}.qcow2");
            string below = Path.GetFileName(chain[^1]);
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", i == 2 ? "cluster_size=4096" : "compat=1.1", "-b", below, "-F", i == 1 ? baseFormat : "qcow2", layer, "16M");
            ExternalTool.RunChecked("qemu-io", [.. writes[i - 1].SelectMany(w => new[] { "-c", w }), layer]);
            chain.Add(layer);
        }

        return [.. chain];
    }

    private string SaveView(string image, string name)
    {
        string raw = temp.Combine(name);
        ExternalTool.RunChecked("qemu-img", "convert", "-U", "-O", "raw", image, raw);
        return raw;
    }

    private static void AssertSame(string image, string reference)
    {
        ExternalTool.Result result = ExternalTool.Run("qemu-img", "compare", "-U", image, reference);
        Assert.True(result.ExitCode == 0, $"qemu-img compare {image} {reference}: {result.Stdout}{result.Stderr}");
    }

    /// <summary>An emptied layer maps nothing itself: every range reads through to what lies below.</summary>
    private static void AssertEmpty(string image)
    {
        string map = ExternalTool.RunChecked("qemu-img", "map", "-U", "--output=json", image);
        using JsonDocument json = JsonDocument.Parse(map);
        foreach (JsonElement e in json.RootElement.EnumerateArray())
        {
            Assert.False(e.GetProperty("depth").GetInt32() == 0 && e.GetProperty("present").GetBoolean(), $"{image} still maps {e}");
        }
    }

    private sealed class CancelAfterFirstChunk(CancellationTokenSource cancel) : IProgress<ImageProgress>
    {
        public int Reports { get; private set; }

        public void Report(ImageProgress value)
        {
            Reports++;
            if (value.BytesCompleted > 0)
            {
                cancel.Cancel();
            }
        }
    }
}
