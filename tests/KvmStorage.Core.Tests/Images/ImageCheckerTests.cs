using System.Buffers.Binary;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// Test-Volume's engine against <c>qemu-img check</c>: valid qemu-made images damaged byte by byte, the counts
/// compared with qemu's JSON, then repaired and checked clean by qemu with the intended guest content.
/// </summary>
public sealed class ImageCheckerTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private const ulong RefBlock = 0x20000;
    private const ulong L1 = 0x30000;
    private const ulong L2 = 0x40000;
    private const ulong Data = 0x50000;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>How the guest sees the base image after a repair: all of it, or the first L2 table's range lost.</summary>
    public enum Content
    {
        Original,
        FirstTableLost,
    }

    public static TheoryData<string, Content> DamageCases() => new()
    {
        { "leaked cluster", Content.Original },
        { "refcount too high", Content.Original },
        { "refcount too low", Content.Original },
        { "L2 table past EOF", Content.FirstTableLost },
        { "L2 entry past EOF", Content.Original },
        { "misaligned L2 offset", Content.FirstTableLost },
        { "misaligned data cluster", Content.Original },
        { "cluster used twice", Content.Original },
        { "copied flag on compressed", Content.Original },
        { "refcount block shared", Content.Original },
        { "refcount table past EOF", Content.Original },
        { "dirty lazy refcounts killed writer", Content.Original },
        { "corrupt bit", Content.Original },
    };

    [SkippableTheory]
    [MemberData(nameof(DamageCases))]
    public void Damaged_image_counts_match_qemu_and_repair_all_makes_it_clean(string damage, Content content)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("d.qcow2");
        byte[] expected = MakeDamaged(path, damage, content);

        QemuCheck qemu = RunQemuCheck(path);
        ImageCheckResult ours = ImageChecker.Check(path);
        Assert.True(qemu.Corruptions == ours.CorruptionCount, $"{damage}: corruptions qemu {qemu.Corruptions}, ours {ours.CorruptionCount}: {string.Join("; ", ours.Corruptions)}\nqemu: {qemu.Stderr}{qemu.Stdout}");
        Assert.Equal(qemu.Leaks, ours.Leaks);
        Assert.Equal(qemu.CheckErrors, ours.CheckErrors);
        Assert.Equal(qemu.Corruptions + qemu.CheckErrors, ours.Errors);
        Assert.Equal(ours.Leaks + ours.CorruptionCount, (ulong)ours.Corruptions.Count - (ulong)ours.Corruptions.Count(c => c.Kind == ImageCorruptionKind.CheckError));
        if (damage != "corrupt bit")
        {
            Assert.False(ours.Passed);
        }

        ImageCheckResult repaired = ImageChecker.Check(path, ImageRepairMode.All);
        Assert.True(repaired.Passed, $"{damage}: after repair {string.Join("; ", repaired.Corruptions)}");
        Assert.False(repaired.DirtyFlag);
        Assert.False(repaired.MarkedCorrupt);
        QemuOracle.AssertCheckClean(path);
        using JsonDocument info = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "info", "--output=json", path));
        Assert.False(info.RootElement.GetProperty("format-specific").GetProperty("data").GetProperty("corrupt").GetBoolean());
        Assert.False(info.RootElement.GetProperty("dirty-flag").GetBoolean());
        AssertRawContent(path, expected);
        Assert.True(ImageChecker.Check(path).Passed);
    }

    [SkippableTheory]
    [InlineData("leaked cluster")]
    [InlineData("refcount too high")]
    [InlineData("refcount too low")]
    [InlineData("snapshot dropped from the header")]
    public void Repair_leaks_fixes_what_qemu_fixes(string damage)
    {
        ExternalTool.Require("qemu-io");
        string ours = temp.Combine("ours.qcow2");
        string theirs = temp.Combine("theirs.qcow2");
        MakeDamaged(ours, damage, Content.Original);
        File.Copy(ours, theirs);
        QemuCheck qemu = RunQemuCheck(theirs, "-r", "leaks");
        ImageCheckResult result = ImageChecker.Check(ours, ImageRepairMode.Leaks);
        if (qemu.ExitCode == 1)
        {
            // "ERROR need to rebuild refcount structures": qemu gives up, and so do we, with a check error.
            Assert.True(result.CheckErrors > 0);
            Assert.Equal(File.ReadAllBytes(theirs), File.ReadAllBytes(ours));
            return;
        }

        Assert.Equal(qemu.Corruptions, result.CorruptionCount);
        Assert.Equal(qemu.Leaks, result.Leaks);
        Assert.Equal(qemu.LeaksFixed, result.LeaksFixed);
        Assert.Equal(RunQemuCheck(theirs).ExitCode, RunQemuCheck(ours).ExitCode);
    }

    public static TheoryData<string> CleanCases() => new()
    {
        "fresh",
        "data",
        "snapshots",
        "compressed",
        "v2",
        "refcount bits 1",
        "extended L2",
        "backing",
        "bitmap",
    };

    [SkippableTheory]
    [MemberData(nameof(CleanCases))]
    public void Clean_image_statistics_match_qemu(string kind)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("c.qcow2");
        MakeClean(path, kind);
        QemuCheck qemu = RunQemuCheck(path);
        ImageCheckResult ours = ImageChecker.Check(path);
        Assert.True(ours.Passed, string.Join("; ", ours.Corruptions));
        Assert.Equal(0, qemu.ExitCode);
        Assert.Equal(qemu.ImageEndOffset, ours.ImageEndOffset);
        Assert.Equal(qemu.TotalClusters, ours.TotalClusters);
        Assert.Equal(qemu.AllocatedClusters, ours.AllocatedClusters);
        Assert.Equal(qemu.FragmentedClusters, ours.FragmentedClusters);
        Assert.Equal(qemu.CompressedClusters, ours.CompressedClusters);

        // Repairing a clean image changes nothing qemu can see.
        byte[] before = File.ReadAllBytes(path);
        ImageCheckResult repaired = ImageChecker.Check(path, ImageRepairMode.All);
        Assert.True(repaired.Passed);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Raw_passes_with_nothing_to_check()
    {
        string path = temp.Combine("r.img");
        File.WriteAllBytes(path, new byte[4096]);
        ImageCheckResult result = ImageChecker.Check(path, ImageRepairMode.All);
        Assert.Equal(ImageFormat.Raw, result.ImageFormat);
        Assert.False(result.Checked);
        Assert.True(result.Passed);
        Assert.Equal(new byte[4096], File.ReadAllBytes(path));
    }

    [Fact]
    public void Missing_file_is_a_typed_error()
    {
        var e = Assert.Throws<KvmStorageException>(() => ImageChecker.Check(temp.Combine("nope.qcow2")));
        Assert.Equal(ImageErrorIds.ImageNotFound, e.ErrorId);
    }

    [SkippableFact]
    public void Unopenable_qcow2_is_a_typed_error_like_qemu_exit_1()
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("bad.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "64M");
        Patch(path, 40, 0x30008UL);
        Assert.Equal(1, RunQemuCheck(path).ExitCode);
        byte[] before = File.ReadAllBytes(path);
        var e = Assert.Throws<KvmStorageException>(() => ImageChecker.Check(path, ImageRepairMode.All));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [SkippableTheory]
    [InlineData("vdi")]
    [InlineData("vpc")]
    [InlineData("vmdk")]
    [InlineData("vhdx")]
    public void Foreign_formats_made_by_qemu_pass(string format)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("f." + format);
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", format, path, "64M");
        ExternalTool.RunChecked("qemu-io", "-f", format, "-c", "write -q -P 0xab 0 3M", "-c", "write -q -P 0xcd 40M 64k", path);
        ImageCheckResult result = ImageChecker.Check(path);
        Assert.True(result.Passed, string.Join("; ", result.Corruptions));
        Assert.True(result.AllocatedClusters > 0);
        Assert.Throws<KvmStorageException>(() => ImageChecker.Check(path, ImageRepairMode.All));
    }

    [SkippableFact]
    public void Vdi_block_used_twice_matches_qemu()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("f.vdi");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vdi", path, "64M");
        ExternalTool.RunChecked("qemu-io", "-f", "vdi", "-c", "write -q -P 0xab 0 3M", path);
        byte[] head = File.ReadAllBytes(path).AsSpan(0, 512).ToArray();
        uint bmap = BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(0x154));
        using (FileStream f = File.OpenWrite(path))
        {
            f.Position = bmap + 4;
            f.Write(BitConverter.GetBytes(0u));
        }

        QemuCheck qemu = RunQemuCheck(path);
        ImageCheckResult ours = ImageChecker.Check(path);
        Assert.Equal(qemu.Corruptions, ours.CorruptionCount);
        Assert.Contains(ours.Corruptions, c => c.Kind == ImageCorruptionKind.ClusterUsedTwice);
    }

    [SkippableFact]
    public void Check_reports_progress_and_honours_cancellation()
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("p.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "4G");
        var updates = new List<ImageProgress>();
        ImageChecker.Check(path, progress: new SyncProgress(updates.Add));
        Assert.NotEmpty(updates);
        Assert.Equal(updates[^1].BytesTotal, updates[^1].BytesCompleted);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ImageChecker.Check(path, cancellationToken: cts.Token));
    }

    private static void AssertRawContent(string path, byte[] expected)
    {
        string raw = path + ".raw";
        ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", path, raw);
        byte[] actual = File.ReadAllBytes(raw);
        File.Delete(raw);
        Assert.Equal(expected.Length, actual.Length);
        int diff = actual.AsSpan().CommonPrefixLength(expected);
        Assert.True(diff == expected.Length, $"content differs at 0x{diff:x}");
    }

    private static byte[] MakeDamaged(string path, string damage, Content content)
    {
        string lazy = damage.StartsWith("dirty", StringComparison.Ordinal) ? "lazy_refcounts=on" : "lazy_refcounts=off";
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", lazy, path, "64M");
        if (damage.StartsWith("dirty", StringComparison.Ordinal))
        {
            // qemu-io raises SIGKILL on itself after the write: the dirty bit stays set, refcounts were never written.
            ExternalTool.Result killed = ExternalTool.Run("qemu-io", "-c", "write -q -P 0xab 0 1M", "-c", "write -q -P 0xcd 32M 128k", "-c", "sigraise 9", path);
            Assert.NotEqual(0, killed.ExitCode);
        }
        else
        {
            ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0xab 0 1M", "-c", "write -q -P 0xcd 32M 128k", path);
        }

        byte[] expected = new byte[64 * MiB];
        if (content == Content.Original)
        {
            expected.AsSpan(0, (int)MiB).Fill(0xab);
            expected.AsSpan((int)(32 * MiB), 128 * 1024).Fill(0xcd);
        }

        switch (damage)
        {
            case "leaked cluster":
                using (FileStream f = File.OpenWrite(path))
                {
                    f.SetLength(0x180000);
                }

                PatchU16(path, RefBlock + (2 * 0x17), 1);
                break;
            case "refcount too high":
                PatchU16(path, RefBlock + (2 * 5), 2);
                break;
            case "refcount too low":
                PatchU16(path, RefBlock + (2 * 5), 0);
                break;
            case "snapshot dropped from the header":
                // What a snapshot create killed after raising refcounts and clearing COPIED leaves: every cluster
                // counted twice but referenced once. Freeing those leaks brings them to refcount 1 with COPIED clear,
                // which qemu-img check -r leaks then repairs as well.
                ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "s1", path);
                PatchU16(path, 60, 0);
                PatchU16(path, 62, 0);
                Patch(path, 64, 0);
                break;
            case "L2 table past EOF":
                Patch(path, L1, 0x8000000010000000UL);
                break;
            case "L2 entry past EOF":
                // Guest cluster 3 points past the end; qemu reads zeros there, so that is the content kept.
                Patch(path, L2 + (3 * 8), 0x8000000010000000UL);
                expected.AsSpan((int)(3 * 65536), 65536).Clear();
                break;
            case "misaligned L2 offset":
                Patch(path, L1, 0x8000000000040200UL);
                break;
            case "misaligned data cluster":
                // qemu refuses to read a misaligned cluster; after the repair it reads as zeros.
                Patch(path, L2 + (2 * 8), 0x8000000000070200UL);
                expected.AsSpan((int)(2 * 65536), 65536).Clear();
                break;
            case "cluster used twice":
                Patch(path, L2 + 8, 0x8000000000000000UL | Data);
                break;
            case "copied flag on compressed":
                MakeCompressedWithCopiedFlag(path);
                break;
            case "refcount block shared":
                // Refcount table entry 1 points at the active refcount block too (qemu: "refcount block 1 refcount=2").
                Patch(path, 0x10000 + 8, RefBlock);
                break;
            case "refcount table past EOF":
                Patch(path, 48, 0x7FFF0000UL);
                break;
            case "dirty lazy refcounts killed writer":
                break;
            case "corrupt bit":
                Patch(path, 72, 2);
                break;
            default:
                throw new ArgumentException(damage);
        }

        return expected;
    }

    private static void MakeCompressedWithCopiedFlag(string path)
    {
        // Rewrite the image compressed, then set the copied flag on its first (compressed) L2 entry.
        string raw = path + ".src";
        ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", path, raw);
        File.Delete(path);
        ExternalTool.RunChecked("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, path);
        File.Delete(raw);
        byte[] entry = new byte[8];
        using FileStream f = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = (long)L2;
        f.ReadExactly(entry);
        ulong value = BinaryPrimitives.ReadUInt64BigEndian(entry);
        Assert.True((value & (1UL << 62)) != 0, "the first cluster should be compressed");
        BinaryPrimitives.WriteUInt64BigEndian(entry, value | (1UL << 63));
        f.Position = (long)L2;
        f.Write(entry);
    }

    private void MakeClean(string path, string kind)
    {
        string size = "200M";
        string[] create = kind switch
        {
            "v2" => ["-o", "compat=0.10"],
            "refcount bits 1" => ["-o", "refcount_bits=1"],
            "extended L2" => ["-o", "extended_l2=on,cluster_size=128k"],
            _ => [],
        };
        if (kind == "backing")
        {
            string backing = temp.Combine("base.qcow2");
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", backing, size);
            ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x11 0 4M", backing);
            create = ["-b", backing, "-F", "qcow2"];
        }

        ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", .. create, path, size]);
        if (kind == "fresh")
        {
            return;
        }

        ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0xab 0 3M", "-c", "write -q -P 0xcd 100M 1M", "-c", "write -q -P 0xee 1M 64k", path);
        switch (kind)
        {
            case "snapshots":
                ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "s1", path);
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x22 0 1M", "-c", "write -q -P 0x33 150M 64k", path);
                ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "s2", path);
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x44 512k 64k", path);
                break;
            case "compressed":
                string raw = path + ".src";
                ExternalTool.RunChecked("qemu-img", "convert", "-O", "raw", path, raw);
                File.Delete(path);
                ExternalTool.RunChecked("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, path);
                File.Delete(raw);
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x55 64k 64k", path);
                break;
            case "bitmap":
                ExternalTool.RunChecked("qemu-img", "bitmap", "--add", path, "b0");
                ExternalTool.RunChecked("qemu-io", "-c", "write -q -P 0x66 50M 64k", path);
                break;
        }
    }

    private static void Patch(string path, ulong offset, ulong value)
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        using FileStream f = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = (long)offset;
        f.Write(bytes);
    }

    private static void PatchU16(string path, ulong offset, ushort value)
    {
        byte[] bytes = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(bytes, value);
        using FileStream f = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = (long)offset;
        f.Write(bytes);
    }

    private static QemuCheck RunQemuCheck(string path, params string[] extra)
    {
        ExternalTool.Result r = ExternalTool.Run("qemu-img", ["check", "--output=json", .. extra, path]);
        var check = new QemuCheck { ExitCode = r.ExitCode, Stdout = r.Stdout, Stderr = r.Stderr };
        if (r.Stdout.TrimStart().StartsWith('{'))
        {
            using JsonDocument json = JsonDocument.Parse(r.Stdout);
            JsonElement e = json.RootElement;
            check.Corruptions = Get(e, "corruptions");
            check.Leaks = Get(e, "leaks");
            check.CheckErrors = Get(e, "check-errors");
            check.LeaksFixed = Get(e, "leaks-fixed");
            check.ImageEndOffset = Get(e, "image-end-offset");
            check.TotalClusters = Get(e, "total-clusters");
            check.AllocatedClusters = Get(e, "allocated-clusters");
            check.FragmentedClusters = Get(e, "fragmented-clusters");
            check.CompressedClusters = Get(e, "compressed-clusters");
        }

        return check;
    }

    private static ulong Get(JsonElement e, string name) => e.TryGetProperty(name, out JsonElement v) ? v.GetUInt64() : 0;

    private sealed class QemuCheck
    {
        public int ExitCode { get; init; }

        public string Stdout { get; init; } = string.Empty;

        public string Stderr { get; init; } = string.Empty;

        public ulong Corruptions { get; set; }

        public ulong Leaks { get; set; }

        public ulong CheckErrors { get; set; }

        public ulong LeaksFixed { get; set; }

        public ulong ImageEndOffset { get; set; }

        public ulong TotalClusters { get; set; }

        public ulong AllocatedClusters { get; set; }

        public ulong FragmentedClusters { get; set; }

        public ulong CompressedClusters { get; set; }
    }

    private sealed class SyncProgress(Action<ImageProgress> report) : IProgress<ImageProgress>
    {
        public void Report(ImageProgress value) => report(value);
    }
}
