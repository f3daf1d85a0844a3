using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// Internal snapshots against qemu as the oracle: after every step <c>qemu-img check</c> is clean (no errors, no
/// leaks), <c>qemu-img info</c> lists exactly our snapshots, and the guest content (read through
/// <c>qemu-img convert -O raw</c>) equals an in-memory model of what was written, snapshotted and reverted.
/// </summary>
/// <remarks>
/// Runs alone: it spawns hundreds of qemu processes, and a child inherits every descriptor of this process between
/// fork and exec, so a lock another test holds for a moment would seem held by a stranger (flaky ImageInUse or
/// "file in use" failures elsewhere).
/// </remarks>
[Collection(nameof(ImageSnapshotsTests))]
public sealed class ImageSnapshotsTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * KiB;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, string[], bool> Variants => new()
    {
        { "v3, 64 KiB clusters", ["-o", "compat=1.1"], false },
        { "v2 (compat 0.10), compressed 4 KiB clusters", ["-o", "compat=0.10,cluster_size=4096"], true },
        { "v3, compressed 512-byte clusters", ["-o", "cluster_size=512"], true },
    };

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Scripted_sequence_matches_the_model_and_stays_clean(string variant, string[] createOptions, bool compressed)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("seq.qcow2");
        var disk = new ModelDisk(path, 8 * MiB, createOptions);
        string c = compressed ? "-c " : string.Empty;

        disk.Write(0x11, 0, MiB, c);
        disk.Write(0x12, 4 * MiB, 128 * KiB, c);
        SnapshotInfo s1 = disk.Snapshot("first");
        Assert.Equal("1", s1.Id);
        Assert.Equal(8UL * MiB, s1.DiskSize);
        Assert.Null(s1.Icount);

        disk.Write(0x22, 512 * KiB, MiB, string.Empty);
        SnapshotInfo s2 = disk.Snapshot("second");
        Assert.Equal("2", s2.Id);

        disk.Write(0x33, 2 * MiB, 64 * KiB, string.Empty);
        disk.Revert("first");
        disk.Write(0x44, 256 * KiB, 64 * KiB, string.Empty);
        disk.Delete("second");
        disk.Write(0x55, 3 * MiB, 64 * KiB, c);
        SnapshotInfo s3 = disk.Snapshot("third");
        Assert.Equal("2", s3.Id);
        disk.Revert("third");
        disk.Revert("first");
        disk.Delete("first");
        disk.Write(0x66, 0, 64 * KiB, string.Empty);
        disk.Delete("third");
        Assert.Empty(ImageSnapshots.List(path));
        Assert.True(variant.Length > 0);
    }

    [SkippableFact]
    public void Revert_restores_the_disk_size_recorded_with_the_snapshot()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("size.qcow2");
        var disk = new ModelDisk(path, 4 * MiB, ["-o", "cluster_size=4096"]);
        disk.Write(0x71, 0, 512 * KiB, string.Empty);
        disk.Snapshot("small");
        ImageResizer.Resize(path, 64 * MiB, new ImageResizeOptions());
        ExternalTool.RunChecked("qemu-io", "-c", $"write -P 0x72 {60 * MiB} 64k", path);
        Assert.Equal(64UL * MiB, ImageInspector.Inspect(path).VirtualSize);

        // qemu-img (7.2 truncates to the recorded size before switching tables) reverts a copy to the same result.
        string copy = temp.Combine("size-copy.qcow2");
        File.Copy(path, copy);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "small", copy);
        disk.Revert("small");
        Assert.Equal(4UL * MiB, ImageInspector.Inspect(path).VirtualSize);
        Assert.Equal(ImageInspector.Inspect(copy).VirtualSize, ImageInspector.Inspect(path).VirtualSize);
        Assert.Equal(RawOf(copy), RawOf(path));
    }

    [SkippableTheory]
    [InlineData("compat=1.1,extended_l2=on")]
    [InlineData("compat=0.10")]
    [InlineData("compat=1.1,cluster_size=512")]
    public void Qemu_made_snapshots_revert_and_delete_like_qemu_img(string options)
    {
        ExternalTool.Require("qemu-io");
        string ours = temp.Combine("ours.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, ours, "4M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x0a 0 1M", "-c", "write -c -P 0x0b 2M 64k", ours);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "a", ours);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x1a 512k 1M", ours);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "b", ours);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x2a 3M 64k", ours);
        string theirs = temp.Combine("theirs.qcow2");
        File.Copy(ours, theirs);
        QemuOracle.AssertInfoMatches(ours);

        (string Ours, string Qemu)[] steps =
        [
            ("revert a", "-a a"),
            ("delete b", "-d b"),
            ("revert 1", "-a 1"),
            ("delete a", "-d a"),
        ];
        foreach ((string step, string qemu) in steps)
        {
            string[] ourStep = step.Split(' ');
            if (ourStep[0] == "revert")
            {
                ImageSnapshots.Revert(ours, ourStep[1]);
            }
            else
            {
                ImageSnapshots.Delete(ours, ourStep[1]);
            }

            string[] q = qemu.Split(' ');
            ExternalTool.RunChecked("qemu-img", "snapshot", q[0], q[1], theirs);
            QemuOracle.AssertCheckClean(ours);
            Assert.Equal(RawOf(theirs), RawOf(ours));
            Assert.Equal(SnapshotKeys(theirs), SnapshotKeys(ours));
            QemuOracle.AssertInfoMatches(ours);
        }
    }

    [SkippableFact]
    public void Our_snapshots_are_reverted_and_deleted_by_qemu_img()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("interop.qcow2");
        var disk = new ModelDisk(path, 4 * MiB, []);
        disk.Write(0x01, 0, MiB, string.Empty);
        disk.Snapshot("mine");
        disk.Write(0x02, 0, 64 * KiB, string.Empty);
        string listing = ExternalTool.RunChecked("qemu-img", "snapshot", "-l", path);
        Assert.Contains("mine", listing, StringComparison.Ordinal);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "mine", path);
        QemuOracle.AssertCheckClean(path);
        ExternalTool.RunChecked("qemu-io", "-r", "-c", "read -P 0x01 0 1M", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-d", "mine", path);
        QemuOracle.AssertCheckClean(path);
        Assert.Empty(ImageSnapshots.List(path));
    }

    [SkippableFact]
    public void Many_snapshots_with_small_clusters_grow_the_refcount_table()
    {
        // 512-byte clusters with 64-bit refcounts: a refcount block covers 64 clusters and one table cluster 4096.
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("many.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", path, "4M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x3c 0 1900k", path);
        Assert.Equal(1U, RefcountTableClusters(path));
        for (int i = 0; i < 48; i++)
        {
            ImageSnapshots.Create(path, $"s{i}");
            if (i % 16 == 15)
            {
                QemuOracle.AssertCheckClean(path);
            }
        }

        Assert.True(RefcountTableClusters(path) > 1, "the refcount table never grew");
        QemuOracle.AssertInfoMatches(path);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x3d 0 64k", path);
        ImageSnapshots.Revert(path, "s7");
        QemuOracle.AssertCheckClean(path);
        ExternalTool.RunChecked("qemu-io", "-r", "-c", "read -P 0x3c 0 1900k", path);
        for (int i = 0; i < 48; i += 2)
        {
            ImageSnapshots.Delete(path, $"s{i}", SnapshotLookup.Name);
        }

        QemuOracle.AssertCheckClean(path);
        Assert.Equal(24, ImageSnapshots.List(path).Count);
    }

    [SkippableFact]
    public void Bad_requests_change_nothing()
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("bad.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
        ImageSnapshots.Create(path, "one");
        byte[] before = File.ReadAllBytes(path);

        AssertRefused(ImageErrorIds.SnapshotNotFound, ErrorKind.NotFound, () => ImageSnapshots.Revert(path, "nope"));
        AssertRefused(ImageErrorIds.SnapshotNotFound, ErrorKind.NotFound, () => ImageSnapshots.Delete(path, "nope"));
        AssertRefused(ImageErrorIds.SnapshotNotFound, ErrorKind.NotFound, () => ImageSnapshots.Delete(path, "one", SnapshotLookup.Id));
        AssertRefused(ImageErrorIds.SnapshotNameExists, ErrorKind.AlreadyExists, () => ImageSnapshots.Create(path, "one"));
        AssertRefused(ImageErrorIds.InvalidSnapshotName, ErrorKind.InvalidArgument, () => ImageSnapshots.Create(path, string.Empty));
        AssertRefused(ImageErrorIds.InvalidSnapshotName, ErrorKind.InvalidArgument, () => ImageSnapshots.Create(path, "a\nb"));
        AssertRefused(ImageErrorIds.InvalidSnapshotName, ErrorKind.InvalidArgument, () => ImageSnapshots.Create(path, new string('x', 256)));
        Assert.Equal(before, File.ReadAllBytes(path));

        string raw = temp.Combine("disk.raw");
        ImageCreator.Create(raw, new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = MiB });
        AssertRefused(ImageErrorIds.SnapshotsNotSupported, ErrorKind.NotSupported, () => ImageSnapshots.Create(raw, "x"));
        Assert.Equal(new byte[MiB], File.ReadAllBytes(raw));
        Assert.Empty(ImageSnapshots.List(raw));

        AssertRefused(ImageErrorIds.ImageNotFound, ErrorKind.NotFound, () => ImageSnapshots.Create(temp.Combine("missing.qcow2"), "x"));
    }

    [SkippableFact]
    public void One_bit_refcounts_cannot_share_clusters()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("rc1.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", path, "1M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x01 0 64k", path);
        byte[] before = File.ReadAllBytes(path);
        AssertRefused(ImageErrorIds.SnapshotRefcountOverflow, ErrorKind.InvalidOperation, () => ImageSnapshots.Create(path, "x"));
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Theory]
    [InlineData(1, ImageErrorIds.ImageDirty)]
    [InlineData(2, ImageErrorIds.ImageCorrupt)]
    public void Dirty_and_corrupt_images_are_refused(byte bit, string errorId)
    {
        string path = temp.Combine($"flag{bit}.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            stream.Position = 79;
            stream.WriteByte(bit);
        }

        byte[] before = File.ReadAllBytes(path);
        AssertRefused(errorId, ErrorKind.InvalidOperation, () => ImageSnapshots.Create(path, "x"));
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [SkippableFact]
    public void An_image_a_qemu_process_holds_is_refused()
    {
        string qemuIo = ExternalTool.Require("qemu-io");
        string path = temp.Combine("busy.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
        ImageSnapshots.Create(path, "one");
        byte[] before = File.ReadAllBytes(path);
        var start = new ProcessStartInfo(qemuIo) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add(path);
        using Process process = Process.Start(start)!;
        try
        {
            Assert.True(WaitUntilBusy(path), "qemu-io never took its locks");
            AssertRefused(ImageErrorIds.ImageInUse, ErrorKind.ResourceBusy, () => ImageSnapshots.Create(path, "two"));
            AssertRefused(ImageErrorIds.ImageInUse, ErrorKind.ResourceBusy, () => ImageSnapshots.Revert(path, "one"));
            AssertRefused(ImageErrorIds.ImageInUse, ErrorKind.ResourceBusy, () => ImageSnapshots.Delete(path, "one"));
            Assert.Single(ImageSnapshots.List(path));
        }
        finally
        {
            process.StandardInput.Close();
            if (!process.WaitForExit(10_000))
            {
                process.Kill();
            }
        }

        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Ids_follow_qemu_largest_plus_one()
    {
        string path = temp.Combine("ids.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
        Assert.Equal("1", ImageSnapshots.Create(path, "a").Id);
        Assert.Equal("2", ImageSnapshots.Create(path, "b").Id);
        Assert.Equal("3", ImageSnapshots.Create(path, "c").Id);
        ImageSnapshots.Delete(path, "2");
        Assert.Equal("4", ImageSnapshots.Create(path, "d").Id);
        ImageSnapshots.Delete(path, "d", SnapshotLookup.Name);
        Assert.Equal("4", ImageSnapshots.Create(path, "e").Id);
        Assert.Equal(["a", "c", "e"], ImageSnapshots.List(path).Select(s => s.Name));
    }

    private static void AssertRefused(string errorId, ErrorKind kind, Action action)
    {
        var e = Assert.Throws<KvmStorageException>(action);
        Assert.Equal(errorId, e.ErrorId);
        Assert.Equal(kind, e.Kind);
    }

    private static bool WaitUntilBusy(string path)
    {
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(20))
        {
            try
            {
                ImageLock.EnsureNotInUse(path, forWrite: true);
            }
            catch (KvmStorageException e) when (e.ErrorId == ImageErrorIds.ImageInUse)
            {
                return true;
            }

            Thread.Sleep(50);
        }

        return false;
    }

    private static uint RefcountTableClusters(string path)
    {
        byte[] head = new byte[64];
        using (var stream = File.OpenRead(path))
        {
            stream.ReadExactly(head);
        }

        return BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(56));
    }

    /// <summary>The guest content, as qemu reads it.</summary>
    private static byte[] RawOf(string path)
    {
        string raw = path + ".raw";
        ExternalTool.RunChecked("qemu-img", "convert", "-U", "-O", "raw", path, raw);
        byte[] bytes = File.ReadAllBytes(raw);
        File.Delete(raw);
        return bytes;
    }

    /// <summary>Id, name and disk size of each snapshot, as qemu-img info lists them.</summary>
    private static string[] SnapshotKeys(string path)
    {
        string stdout = ExternalTool.RunChecked("qemu-img", "info", "-U", "--output=json", path);
        using JsonDocument json = JsonDocument.Parse(stdout);
        return json.RootElement.TryGetProperty("snapshots", out JsonElement list)
            ? [.. list.EnumerateArray().Select(s => $"{s.GetProperty("id").GetString()}:{s.GetProperty("name").GetString()}")]
            : [];
    }

    /// <summary>An image plus the bytes the guest should see, and the bytes each snapshot should restore.</summary>
    private sealed class ModelDisk
    {
        private readonly string path;
        private readonly Dictionary<string, byte[]> snapshots = [];
        private byte[] content;

        public ModelDisk(string path, int size, string[] createOptions)
        {
            this.path = path;
            content = new byte[size];
            ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", .. createOptions, path, size.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }

        public void Write(byte pattern, int offset, int length, string flags)
        {
            ExternalTool.RunChecked("qemu-io", "-c", $"write {flags}-P 0x{pattern:x2} {offset} {length}", path);
            content.AsSpan(offset, length).Fill(pattern);
        }

        public SnapshotInfo Snapshot(string name)
        {
            string hash = System.Convert.ToHexString(SHA256.HashData(content));
            SnapshotInfo info = ImageSnapshots.Create(path, name);
            Assert.Equal(name, info.Name);
            snapshots[name] = (byte[])content.Clone();
            Assert.Equal(hash, System.Convert.ToHexString(SHA256.HashData(content)));
            Verify();
            return info;
        }

        public void Revert(string name)
        {
            ImageSnapshots.Revert(path, name, SnapshotLookup.Name);
            content = (byte[])snapshots[name].Clone();
            Verify();
        }

        public void Delete(string name)
        {
            ImageSnapshots.Delete(path, name, SnapshotLookup.Name);
            snapshots.Remove(name);
            Verify();
        }

        private void Verify()
        {
            QemuOracle.AssertCheckClean(path);
            ImageInfo info = QemuOracle.AssertInfoMatches(path);
            Assert.Equal(snapshots.Keys.Order(StringComparer.Ordinal), info.Snapshots.Select(s => s.Name).Order(StringComparer.Ordinal));
            Assert.Equal(ImageSnapshots.List(path).Select(s => s.Id), info.Snapshots.Select(s => s.Id));
            byte[] raw = RawOf(path);
            Assert.Equal(content.Length, raw.Length);
            Assert.True(content.AsSpan().SequenceEqual(raw), "the guest content differs from the model");
        }
    }
}

/// <summary>The collection of <see cref="ImageSnapshotsTests"/>, run without other tests in parallel.</summary>
[CollectionDefinition(nameof(ImageSnapshotsTests), DisableParallelization = true)]
public sealed class ImageSnapshotsRunAlone
{
}
