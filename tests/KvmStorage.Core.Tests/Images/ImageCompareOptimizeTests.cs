using System.Text.RegularExpressions;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.IO;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>Compare-Volume against <c>qemu-img compare</c>, Optimize-Volume against compare, check and allocation.</summary>
public sealed partial class ImageCompareOptimizeTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, bool> Pairs() => new()
    {
        { "same content qcow2 and raw", false },
        { "same content qcow2 and vmdk", false },
        { "same content through a backing chain", false },
        { "one byte changed", false },
        { "one byte changed in the first sector", false },
        { "larger with zero tail", false },
        { "larger with zero tail", true },
        { "larger with data tail", false },
        { "larger with data tail", true },
        { "data against unallocated zeros", false },
    };

    [SkippableTheory]
    [MemberData(nameof(Pairs))]
    public void Compare_agrees_with_qemu_img_compare(string pair, bool strict)
    {
        ExternalTool.Require("qemu-io");
        (string a, string b) = MakePair(pair);
        ExternalTool.Result qemu = strict ? ExternalTool.Run("qemu-img", "compare", "-s", a, b) : ExternalTool.Run("qemu-img", "compare", a, b);
        Assert.True(qemu.ExitCode is 0 or 1, $"qemu-img compare failed: {qemu.Stderr}{qemu.Stdout}");
        ImageCompareResult ours = ImageComparer.Compare(a, b, strict);
        Assert.Equal(qemu.ExitCode == 0, ours.Identical);
        Match m = MismatchOffset().Match(qemu.Stdout);
        Assert.Equal(m.Success ? ulong.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null, ours.FirstDifferenceOffset);

        // Symmetric: swapping the images finds the same first difference.
        Assert.Equal(ours.FirstDifferenceOffset, ImageComparer.Compare(b, a, strict).FirstDifferenceOffset);
    }

    [SkippableFact]
    public void Compare_walks_what_huge_images_hold_not_what_they_declare()
    {
        // An empty 4 PiB qcow2 compared with itself was 2^31 two-MiB steps; it is now a walk of its few extents. The
        // verdicts are qemu-img compare's; the speed is measured in bench/Invoke-HealthBenchmark.ps1, not here.
        ExternalTool.Require("qemu-img");
        string huge = temp.Combine("huge.qcow2");
        string other = temp.Combine("other.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", huge, "4P");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", other, "4P");
        ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x7 4503599625273344 512", other);

        ImageCompareResult same = ImageComparer.Compare(huge, huge);
        Assert.True(same.Identical);
        ImageCompareResult differ = ImageComparer.Compare(huge, other);
        Assert.False(differ.Identical);
        Assert.Equal(4503599625273344UL, differ.FirstDifferenceOffset);
        Assert.Equal(1, ExternalTool.Run("qemu-img", "compare", "-q", huge, other).ExitCode);
    }

    [Fact]
    public void Compare_of_a_missing_image_is_a_typed_error()
    {
        string a = temp.Combine("a.img");
        File.WriteAllBytes(a, new byte[4096]);
        var e = Assert.Throws<KvmStorageException>(() => ImageComparer.Compare(a, temp.Combine("missing.img")));
        Assert.Equal(ImageErrorIds.ImageNotFound, e.ErrorId);
    }

    public static TheoryData<string, bool> OptimizeCases() => new()
    {
        { "qcow2", false },
        { "qcow2", true },
        { "qcow2 over backing", false },
        { "qcow2 over backing", true },
        { "qcow2 v2", false },
        { "qcow2 compressed", true },
        { "raw", false },
        { "raw", true },
    };

    [SkippableTheory]
    [MemberData(nameof(OptimizeCases))]
    public void Optimize_keeps_content_passes_check_and_reduces_allocation(string kind, bool compact)
    {
        ExternalTool.Require("qemu-io");
        string path = MakeZeroHeavy(kind);
        string original = temp.Combine("original");
        ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", path, original);
        ulong before = FileStatus.Get(path).AllocatedBytes;

        ImageOptimizeResult result = ImageOptimizer.Optimize(path, compact);

        ExternalTool.RunChecked("qemu-img", "compare", "-f", "raw", original, path);
        if (!kind.StartsWith("raw", StringComparison.Ordinal))
        {
            QemuOracle.AssertCheckClean(path);
        }

        Assert.Equal(before, result.AllocatedBefore);
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
        if (kind == "qcow2 compressed")
        {
            // Compaction stores compressed clusters uncompressed: the content is what counts here.
            return;
        }

        Assert.True(result.AllocatedAfter < before, $"{kind}: allocation {before} -> {result.AllocatedAfter}");
        Assert.Equal(before - result.AllocatedAfter, result.BytesFreed);
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
    }

    [SkippableFact]
    public void Optimize_refuses_a_corrupt_qcow2_and_changes_nothing()
    {
        ExternalTool.Require("qemu-io");
        string path = MakeZeroHeavy("qcow2");
        using (FileStream f = File.OpenWrite(path))
        {
            f.Position = 0x20000 + 10;
            f.Write([0, 0]);
        }

        byte[] before = File.ReadAllBytes(path);
        var e = Assert.Throws<KvmStorageException>(() => ImageOptimizer.Optimize(path));
        Assert.Equal(ImageErrorIds.ImageCorrupt, e.ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [SkippableFact]
    public void Optimize_keeps_snapshot_data()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("s.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "64M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0 0 2M", "-c", "write -q -P 0x77 4M 1M", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "s1", path);
        ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0 4M 1M", path);
        ImageOptimizer.Optimize(path);
        QemuOracle.AssertCheckClean(path);
        ExternalTool.RunChecked("qemu-io", "-c", "read -q -P 0 0 8M", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "s1", path);
        ExternalTool.RunChecked("qemu-io", "-c", "read -q -P 0x77 4M 1M", path);
        Assert.Throws<KvmStorageException>(() => ImageOptimizer.Optimize(path, compact: true));
    }

    private string MakeZeroHeavy(string kind)
    {
        string path = temp.Combine("o." + (kind.StartsWith("raw", StringComparison.Ordinal) ? "img" : "qcow2"));
        string[] writes = ["-c", "write -q -P 0xab 0 1M", "-c", "write -q -P 0 1M 4M", "-c", "write -q -P 0xcd 8M 64k", "-c", "write -q -P 0 20M 1M"];
        switch (kind)
        {
            case "raw":
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "raw", path, "64M");
                ExternalTool.RunChecked("qemu-io", ["-f", "raw", .. writes, path]);
                break;
            case "qcow2 over backing":
                string backing = temp.Combine("base.qcow2");
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", backing, "64M");
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x11 0 32M", backing);
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", path);
                ExternalTool.RunChecked("qemu-io", [.. writes, path]);
                break;
            default:
                string[] options = kind == "qcow2 v2" ? ["-o", "compat=0.10"] : [];
                ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", .. options, path, "64M"]);
                ExternalTool.RunChecked("qemu-io", [.. writes, path]);
                if (kind == "qcow2 compressed")
                {
                    // Compressed clusters, then zeros written over part of them and fresh data (leaves holes in the layout).
                    string raw = path + ".src";
                    ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", path, raw);
                    File.Delete(path);
                    ExternalTool.RunChecked("qemu-img", "convert", "-c", "-O", "qcow2", raw, path);
                    File.Delete(raw);
                    ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0 0 512k", "-c", "write -q -P 0x99 30M 2M", path);
                }

                break;
        }

        return path;
    }

    private (string A, string B) MakePair(string pair)
    {
        string a = temp.Combine("a.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", a, "64M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0xab 0 1M", "-c", "write -q -P 0xcd 5M 64k", "-c", "write -q -P 0 10M 1M", a);
        string b;
        switch (pair)
        {
            case "same content qcow2 and raw":
                b = temp.Combine("b.img");
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", a, b);
                break;
            case "same content qcow2 and vmdk":
                b = temp.Combine("b.vmdk");
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "vmdk", a, b);
                break;
            case "same content through a backing chain":
                b = temp.Combine("b.qcow2");
                string middle = temp.Combine("m.qcow2");
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", middle, "64M");
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0xab 0 1M", "-c", "write -q -P 0x11 5M 64k", middle);
                ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", middle, "-F", "qcow2", b);
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0xcd 5M 64k", b);
                break;
            case "one byte changed":
            case "one byte changed in the first sector":
                b = temp.Combine("b.img");
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", a, b);
                using (FileStream f = File.OpenWrite(b))
                {
                    f.Position = pair.EndsWith("sector", StringComparison.Ordinal) ? 100 : (5 * 1024 * 1024) + 1234;
                    f.WriteByte(0x42);
                }

                break;
            case "larger with zero tail":
            case "larger with data tail":
                b = temp.Combine("b.qcow2");
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "qcow2", a, b);
                ExternalTool.RunChecked("qemu-img", "resize", "-q", b, "80M");
                ExternalTool.RunChecked("qemu-io", "-c", pair.Contains("data", StringComparison.Ordinal) ? "write -q -P 0x5a 70M 4k" : "write -q -P 0 70M 4k", b);
                break;
            case "data against unallocated zeros":
                b = temp.Combine("b.qcow2");
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "qcow2", a, b);
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x01 40M 512", b);
                break;
            default:
                throw new ArgumentException(pair);
        }

        return (a, b);
    }

    [GeneratedRegex(@"Content mismatch at offset (\d+)!")]
    private static partial Regex MismatchOffset();
}
