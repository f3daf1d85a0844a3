using System.Security.Cryptography;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Chains;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// Rebase against qemu as the oracle: the guest view before and after (<c>qemu-img compare</c> against a raw copy
/// taken with <c>qemu-img convert</c>), <c>qemu-img check</c> clean, <c>qemu-img info</c> naming the new backing
/// file, and for -Unsafe a file byte-identical to what <c>qemu-img rebase -u</c> writes.
/// </summary>
[Collection(nameof(ImageChainTestsRunAlone))]
public sealed class ImageRebaserTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * KiB;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, int> Chains => new()
    {
        { "raw", 1 },
        { "raw", 2 },
        { "raw", 3 },
        { "qcow2", 1 },
        { "qcow2", 2 },
        { "qcow2", 3 },
    };

    [SkippableTheory]
    [MemberData(nameof(Chains))]
    public void Rebase_onto_another_image_keeps_the_guest_view(string baseFormat, int depth)
    {
        string top = BuildChain(baseFormat, depth);
        string golden = temp.Combine("golden2.qcow2");
        Qemu("create", "-q", "-f", "qcow2", golden, "6M");
        QemuIo(golden, "qcow2", "write -P 0x77 0 6M");
        QemuIo(golden, "qcow2", "write -z 1M 512k");
        string before = RawCopy(top);

        ImageInfo info = ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = golden });

        Assert.Equal(golden, info.BackingFile);
        Assert.Equal("qcow2", info.BackingFormat);
        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
        QemuOracle.AssertInfoMatches(top);
    }

    [SkippableTheory]
    [MemberData(nameof(Chains))]
    public void Rebase_to_standalone_keeps_the_guest_view(string baseFormat, int depth)
    {
        string top = BuildChain(baseFormat, depth);
        string before = RawCopy(top);

        ImageInfo info = ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = null });

        Assert.Null(info.BackingFile);
        Assert.Null(info.BackingFormat);
        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
        QemuOracle.AssertInfoMatches(top);
    }

    [SkippableTheory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public void Rebase_skipping_the_middle_layers_onto_the_base_keeps_the_guest_view(string baseFormat)
    {
        string top = BuildChain(baseFormat, 3);
        string before = RawCopy(top);
        string baseImage = temp.Combine("layer0." + baseFormat);

        ImageInfo info = ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = "layer0." + baseFormat });

        Assert.Equal("layer0." + baseFormat, info.BackingFile);
        Assert.Equal(baseImage, info.FullBackingFile);
        Assert.Equal(baseFormat, info.BackingFormat);
        Assert.Single(info.BackingChain);
        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
        QemuOracle.AssertInfoMatches(top);
    }

    [SkippableTheory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public void Rebase_onto_a_lower_layer_larger_than_the_old_backing_file_keeps_the_guest_view(string baseFormat)
    {
        // base (6M, data at 5M) <- mid (4M: hides the base's data past its end) <- top (6M). The new backing file is a
        // layer of the old chain, but past the old backing file's end the two chains still read differently.
        ExternalTool.Require("qemu-io");
        string baseImage = temp.Combine("big." + baseFormat);
        Qemu("create", "-q", "-f", baseFormat, baseImage, "6M");
        QemuIo(baseImage, baseFormat, "write -P 0x41 0 1M", "write -P 0x42 5M 512k");
        string mid = temp.Combine("short.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-b", baseImage, "-F", baseFormat, mid, "4M");
        QemuIo(mid, "qcow2", "write -P 0x43 512k 256k");
        string top = temp.Combine("tall.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, "6M");
        QemuIo(top, "qcow2", "write -P 0x44 2M 64k");
        string before = RawCopy(top);
        string copy = temp.Combine("tall-qemu.qcow2");
        File.Copy(top, copy);

        ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = baseImage, BackingFormat = Enum.Parse<ImageFormat>(baseFormat, ignoreCase: true) });
        Qemu("rebase", "-b", baseImage, "-F", baseFormat, copy);

        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
        Assert.Equal(0, ExternalTool.Run("qemu-img", "compare", "-U", top, copy).ExitCode);
    }

    [SkippableTheory]
    [InlineData("1.1")]
    [InlineData("0.10")]
    public void A_standalone_image_rebased_onto_a_backing_file_keeps_the_guest_view(string compat)
    {
        ExternalTool.Require("qemu-io");
        string image = temp.Combine("alone.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", $"compat={compat}", image, "4M");
        QemuIo(image, "qcow2", "write -P 0x42 1M 128k");
        string golden = temp.Combine("golden.qcow2");
        Qemu("create", "-q", "-f", "qcow2", golden, "4M");
        QemuIo(golden, "qcow2", "write -P 0x77 0 4M");
        string before = RawCopy(image);

        ImageInfo info = ImageRebaser.Rebase(image, new RebaseOptions { BackingFile = "golden.qcow2" });

        Assert.Equal(golden, info.FullBackingFile);
        AssertSameView(before, image);
        QemuOracle.AssertCheckClean(image);
    }

    [SkippableFact]
    public void Safe_rebase_agrees_with_qemu_img_rebase()
    {
        string top = BuildChain("qcow2", 2);
        string copy = temp.Combine("copy.qcow2");
        File.Copy(top, copy);
        string target = temp.Combine("layer0.qcow2");
        Qemu("rebase", "-b", target, "-F", "qcow2", copy);

        ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = target });

        Assert.Equal(0, ExternalTool.Run("qemu-img", "compare", "-U", top, copy).ExitCode);
        QemuOracle.AssertCheckClean(top);

        // Only what the new backing file reads differently was copied: the layer-1 data, nothing of the base.
        Assert.Equal(AllocatedBytes(copy), AllocatedBytes(top));
    }

    [SkippableFact]
    public void Version_2_images_get_explicit_zeros_where_the_old_chain_read_zeros()
    {
        string baseImage = temp.Combine("zbase.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "compat=0.10", baseImage, "4M");
        string top = temp.Combine("ztop.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", baseImage, "-F", "qcow2", top);
        string golden = temp.Combine("zgolden.qcow2");
        Qemu("create", "-q", "-f", "qcow2", golden, "4M");
        QemuIo(golden, "qcow2", "write -P 0x5a 0 4M");
        QemuIo(baseImage, "qcow2", "write -P 0x01 1M 64k");
        string before = RawCopy(top);

        ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = golden });

        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
    }

    [SkippableTheory]
    [InlineData("moved.qcow2", "qcow2")]
    [InlineData(null, null)]
    public void Unsafe_rebase_writes_exactly_what_qemu_img_rebase_u_writes(string? newName, string? format)
    {
        string top = BuildChain("qcow2", 1);
        string copy = temp.Combine("copy.qcow2");
        File.Copy(top, copy);
        if (newName is not null)
        {
            File.Copy(temp.Combine("layer0.qcow2"), temp.Combine(newName));
        }

        Qemu(newName is null ? ["rebase", "-u", "-b", string.Empty, copy] : ["rebase", "-u", "-b", newName, "-F", format!, copy]);

        ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = newName, Unsafe = true });

        Assert.Equal(File.ReadAllBytes(copy), File.ReadAllBytes(top));
    }

    [SkippableFact]
    public void Unsafe_rebase_keeps_bitmaps_and_other_header_extensions()
    {
        string top = BuildChain("qcow2", 1);
        Qemu("bitmap", "--add", top, "dirty0");
        string moved = temp.Combine("moved.qcow2");
        File.Move(temp.Combine("layer0.qcow2"), moved);

        ImageInfo info = ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = moved, Unsafe = true });

        Assert.Equal(moved, info.BackingFile);
        using JsonDocument json = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "info", "-U", "--output=json", top));
        JsonElement bitmaps = json.RootElement.GetProperty("format-specific").GetProperty("data").GetProperty("bitmaps");
        Assert.Equal("dirty0", bitmaps[0].GetProperty("name").GetString());
        QemuOracle.AssertCheckClean(top);
    }

    [SkippableFact]
    public void A_cancelled_rebase_leaves_the_image_valid_with_its_old_backing_file()
    {
        string top = BuildChain("qcow2", 1);
        string golden = temp.Combine("golden2.qcow2");
        Qemu("create", "-q", "-f", "qcow2", golden, "6M");
        QemuIo(golden, "qcow2", "write -P 0x77 0 6M");
        string before = RawCopy(top);
        using var cancel = new CancellationTokenSource();
        int reports = 0;
        var progress = new SyncProgress(p =>
        {
            if (p.BytesCompleted > 0 && ++reports == 2)
            {
                cancel.Cancel();
            }
        });

        Assert.ThrowsAny<OperationCanceledException>(() => ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = golden }, progress, cancel.Token));

        Assert.Equal(2, reports);
        ImageInfo info = ImageInspector.Inspect(top);
        Assert.Equal(temp.Combine("layer0.qcow2"), info.BackingFile);
        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);

        // A later run completes from there.
        ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = golden });
        AssertSameView(before, top);
        QemuOracle.AssertCheckClean(top);
    }

    public static TheoryData<string> Refusals => new()
    {
        { "not qcow2" },
        { "missing backing" },
        { "itself" },
        { "loop" },
        { "raw outside pools" },
        { "device" },
        { "current backing missing" },
        { "nonexistent long name" },
        { "empty name" },
        { "in use" },
        { "network" },
    };

    [SkippableTheory]
    [MemberData(nameof(Refusals))]
    public void Bad_requests_are_refused_and_change_nothing(string scenario)
    {
        string top = BuildChain("qcow2", 1);
        string raw = temp.Combine("plain.raw");
        Qemu("create", "-q", "-f", "raw", raw, "1M");
        string target = top;
        RebaseOptions options;
        string expected;
        IDisposable? held = null;
        switch (scenario)
        {
            case "not qcow2":
                target = raw;
                options = new RebaseOptions { BackingFile = temp.Combine("layer0.qcow2") };
                expected = RebaseErrorIds.RebaseNotSupported;
                break;
            case "missing backing":
                options = new RebaseOptions { BackingFile = temp.Combine("nope.qcow2") };
                expected = ImageErrorIds.BackingFileNotFound;
                break;
            case "itself":
                options = new RebaseOptions { BackingFile = top };
                expected = RebaseErrorIds.RebaseWouldLoop;
                break;
            case "loop":
                target = temp.Combine("layer0.qcow2");
                options = new RebaseOptions { BackingFile = top };
                expected = RebaseErrorIds.RebaseWouldLoop;
                break;
            case "raw outside pools":
                // The host's rule (a host root here with no pool at all): a raw file outside every pool is never a backing file.
                options = new RebaseOptions { BackingFile = "plain.raw", BackingRule = new KvmStorage.Core.Access.HostFiles(new KvmStorage.Core.Backends.Offline.OfflineHost(new KvmStorage.Core.Backends.HostPaths(temp.Path))).BackingRule };
                expected = ImageErrorIds.BackingFileNotAllowed;
                break;
            case "device":
                options = new RebaseOptions { BackingFile = "/dev/null" };
                expected = RebaseErrorIds.BackingNotAllowed;
                break;
            case "current backing missing":
                File.Move(temp.Combine("layer0.qcow2"), temp.Combine("elsewhere.qcow2"));
                options = new RebaseOptions { BackingFile = temp.Combine("elsewhere.qcow2") };
                expected = RebaseErrorIds.CurrentBackingMissing;
                break;
            case "nonexistent long name":
                options = new RebaseOptions { BackingFile = "/" + new string('a', 1100), Unsafe = true };
                expected = ImageErrorIds.BackingFileNotFound;
                break;
            case "empty name":
                options = new RebaseOptions { BackingFile = string.Empty };
                expected = ImageErrorIds.InvalidBackingName;
                break;
            case "in use":
                held = ImageLock.AcquireForWrite(top);
                options = new RebaseOptions { BackingFile = null };
                expected = ImageErrorIds.ImageInUse;
                break;
            default:
                options = new RebaseOptions { BackingFile = "nbd://127.0.0.1/x" };
                expected = RebaseErrorIds.BackingNotAllowed;
                break;
        }

        string[] files = Directory.GetFiles(temp.Path);
        Dictionary<string, string> hashes = files.ToDictionary(f => f, Hash);
        try
        {
            var e = Assert.Throws<KvmStorageException>(() => ImageRebaser.Rebase(target, options));
            Assert.Equal(expected, e.ErrorId);
            Assert.False(string.IsNullOrWhiteSpace(e.Message));
        }
        finally
        {
            held?.Dispose();
        }

        Assert.Equal(files.Order(StringComparer.Ordinal), Directory.GetFiles(temp.Path).Order(StringComparer.Ordinal));
        foreach ((string file, string hash) in hashes)
        {
            Assert.Equal(hash, Hash(file));
        }
    }

    [SkippableFact]
    public void A_name_that_does_not_fit_in_the_first_cluster_is_refused_before_writing()
    {
        string baseImage = temp.Combine("b.qcow2");
        Qemu("create", "-q", "-f", "qcow2", baseImage, "1M");
        string top = temp.Combine("t.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", baseImage, "-F", "qcow2", top);
        string folder = temp.Combine(new string('d', 200), new string('e', 200));
        Directory.CreateDirectory(folder);
        string far = Path.Combine(folder, "base-with-a-long-name.qcow2");
        File.Copy(baseImage, far);
        string hash = Hash(top);

        var e = Assert.Throws<KvmStorageException>(() => ImageRebaser.Rebase(top, new RebaseOptions { BackingFile = far, Unsafe = true }));

        Assert.Equal(ImageErrorIds.InvalidBackingName, e.ErrorId);
        Assert.Equal(hash, Hash(top));
    }

    /// <summary>
    /// layer0 (raw or qcow2, 4 MiB) ← layer1 ← ... ← layer{depth} (the top, qcow2, 6 MiB: bigger than its base), each
    /// layer writing its own pattern at its own offsets, some overlapping the layers below, plus a zeroed range.
    /// </summary>
    private string BuildChain(string baseFormat, int depth)
    {
        ExternalTool.Require("qemu-io");
        string below = temp.Combine("layer0." + baseFormat);
        Qemu("create", "-q", "-f", baseFormat, below, "4M");
        QemuIo(below, baseFormat, "write -P 0x10 0 1M", "write -P 0x11 3M 1M");
        string belowFormat = baseFormat;
        for (int layer = 1; layer <= depth; layer++)
        {
            string image = temp.Combine($"layer{layer}.qcow2");
            string size = layer == depth ? "6M" : "4M";
            Qemu("create", "-q", "-f", "qcow2", "-b", below, "-F", belowFormat, image, size);
            int offset = layer * 384 * KiB;
            QemuIo(image, "qcow2", $"write -P 0x{0x20 + layer:x} {offset} 200k", $"write -z {(3 * MiB) + (layer * 64 * KiB)} 64k");
            below = image;
            belowFormat = "qcow2";
        }

        QemuIo(below, "qcow2", "write -P 0x99 5M 100k");
        return below;
    }

    private string RawCopy(string image)
    {
        string raw = temp.Combine(Path.GetFileName(image) + $".{Guid.NewGuid():N}.view");
        Qemu("convert", "-U", "-O", "raw", image, raw);
        return raw;
    }

    private static void AssertSameView(string rawBefore, string image)
    {
        ExternalTool.Result result = ExternalTool.Run("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", rawBefore, image);
        Assert.True(result.ExitCode == 0, $"qemu-img compare: {result.Stdout}{result.Stderr}");
    }

    private static ulong AllocatedBytes(string image)
    {
        using JsonDocument map = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "map", "-U", "--output=json", image));
        return map.RootElement.EnumerateArray()
            .Where(e => e.GetProperty("depth").GetInt32() == 0 && (e.GetProperty("data").GetBoolean() || e.GetProperty("zero").GetBoolean()))
            .Aggregate(0UL, (sum, e) => sum + e.GetProperty("length").GetUInt64());
    }

    private static string Hash(string file) => System.Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));

    private static void Qemu(params string[] arguments) => ExternalTool.RunChecked("qemu-img", arguments);

    private static void QemuIo(string image, string format, params string[] commands)
    {
        var arguments = new List<string> { "-f", format };
        foreach (string command in commands)
        {
            arguments.Add("-c");
            arguments.Add(command);
        }

        arguments.Add(image);
        ExternalTool.RunChecked("qemu-io", [.. arguments]);
    }

    private sealed class SyncProgress(Action<ImageProgress> report) : IProgress<ImageProgress>
    {
        public void Report(ImageProgress value) => report(value);
    }
}

/// <summary>Chain tests spawn many qemu processes while holding image locks: run them without other tests in parallel.</summary>
[CollectionDefinition(nameof(ImageChainTestsRunAlone), DisableParallelization = true)]
public sealed class ImageChainTestsRunAlone
{
}
