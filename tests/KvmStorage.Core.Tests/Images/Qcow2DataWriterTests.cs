using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// In-place qcow2 writes against qemu as the oracle: after every step <c>qemu-img check</c> is clean (no errors, no
/// leaks) and the guest view (<c>qemu-img convert -O raw</c>, and <c>qemu-io read -P</c> of the written bytes) equals
/// an in-memory model of what was written.
/// </summary>
[Collection(nameof(ImageSnapshotsTests))]
public sealed class Qcow2DataWriterTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * KiB;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, string> Layouts => new()
    {
        { "v3, 64 KiB clusters", "compat=1.1" },
        { "v2, 512-byte clusters", "compat=0.10,cluster_size=512" },
        { "v3, 4 KiB clusters, 8-bit refcounts", "compat=1.1,cluster_size=4096,refcount_bits=8" },
    };

    [SkippableTheory]
    [MemberData(nameof(Layouts))]
    public void Unaligned_writes_into_a_fresh_image(string layout, string options)
    {
        var disk = Model.Create(temp.Combine("fresh.qcow2"), 3 * MiB, options);
        disk.Write(0x11, 100, 7);
        disk.Write(0x12, 65530, 20);
        disk.Write(0x13, MiB - 3, 70 * KiB);
        disk.Write(0x14, 1000, 300 * KiB);
        disk.Write(0x15, (3 * MiB) - 5, 5);

        // Overwrites of clusters the image already owns go in place.
        long length = new FileInfo(disk.Path).Length;
        disk.Write(0x16, 1010, 10);
        Assert.Equal(length, new FileInfo(disk.Path).Length);
        Assert.True(layout.Length > 0);
    }

    [SkippableTheory]
    [MemberData(nameof(Layouts))]
    public void One_writer_many_steps_each_sees_the_last_ones_entries(string layout, string options)
    {
        // Each batch's entries are linked at the writer's next step: every step below plans against tables that must
        // already hold the previous step's new clusters (same clusters, same L2 table, partial clusters, zeros).
        var disk = Model.Create(temp.Combine("session.qcow2"), 3 * MiB, options);
        disk.Session(
            writer: false,
            (0x21, 0, 200 * KiB),
            (0x22, 64 * KiB, 64 * KiB),
            (0x23, (100 * KiB) + 3, 10),
            (0, 150 * KiB, 20 * KiB),
            (0x24, 2 * MiB, 700 * KiB),
            (0x25, (2 * MiB) + 5, 1));
        Assert.NotEmpty(layout);
    }

    [SkippableFact]
    public void Dispose_without_Flush_links_the_last_batch()
    {
        var disk = Model.Create(temp.Combine("nolink.qcow2"), 2 * MiB, "compat=1.1");
        disk.Session(writer: true, (0x31, 0, (int)MiB), (0x32, MiB, 4 * KiB));
    }

    [SkippableTheory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public void Partial_clusters_are_filled_from_the_backing_file(string backingFormat)
    {
        string basePath = temp.Combine("base." + backingFormat);
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", backingFormat, basePath, "2M");
        ExternalTool.RunChecked("qemu-io", "-f", backingFormat, "-c", "write -P 0xb1 0 1M", "-c", "write -P 0xb2 1M 1M", basePath);
        string overlay = temp.Combine("overlay.qcow2");

        // The overlay is larger than its backing file: past the backing file's end the guest reads zeros.
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", basePath, "-F", backingFormat, overlay, "3M");
        var disk = Model.Open(overlay);
        disk.Write(0x21, 5, 10);
        disk.Write(0x22, MiB - 100, 200);
        disk.Write(0x23, (2 * MiB) - 10, 8200);
        disk.Write(0x24, 500 * KiB, 64 * KiB);
        disk.Write(0x25, 12, 3);
    }

    [SkippableTheory]
    [InlineData("compat=1.1")]
    [InlineData("compat=0.10,cluster_size=4096")]
    public void Writes_after_a_snapshot_copy_shared_clusters_and_tables(string options)
    {
        string path = temp.Combine("snap.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "4M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x31 0 2M", "-c", "write -c -P 0x32 3M 64k", path);
        byte[] atSnapshot = Model.RawOf(path, temp);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "before", path);

        var disk = Model.Open(path);
        disk.Write(0x33, 10, 100);
        disk.Write(0x34, MiB + 7, 70 * KiB);
        disk.Write(0x35, (3 * MiB) + 1, 10);
        disk.WriteZeroes((2 * MiB) - 4096, 8192);
        disk.Write(0x36, 20, 5);

        // qemu reverts the snapshot to exactly what it held.
        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "before", path);
        QemuOracle.AssertCheckClean(path);
        Assert.Equal(atSnapshot, Model.RawOf(path, temp));
        ExternalTool.RunChecked("qemu-io", "-r", "-c", "read -P 0x31 0 2M", "-c", "read -P 0x32 3M 64k", path);
    }

    [SkippableTheory]
    [InlineData("compat=1.1,compression_type=zlib")]
    [InlineData("compat=1.1,compression_type=zstd,cluster_size=4096")]
    [InlineData("compat=0.10,cluster_size=4096")]
    public void Compressed_clusters_are_rewritten_as_normal_ones(string options)
    {
        string path = temp.Combine("compressed.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "2M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -c -P 0x41 0 256k", "-c", "write -c -P 0x42 1M 128k", path);
        var disk = Model.Open(path);
        disk.Write(0x43, 3, 5);
        disk.Write(0x44, (64 * KiB) - 1, 2);
        disk.Write(0x45, (1 * MiB) + 100, 64 * KiB);
        disk.WriteZeroes(128 * KiB, 64 * KiB);
        disk.DiscardAll();
    }

    [SkippableFact]
    public void Many_small_writes_grow_the_refcount_table()
    {
        // 512-byte clusters with 64-bit refcounts: a refcount block covers 64 clusters, one table cluster 64 blocks (2 MiB).
        var disk = Model.Create(temp.Combine("grow.qcow2"), 4 * MiB, "cluster_size=512,refcount_bits=64");
        for (int i = 0; i < 24; i++)
        {
            disk.Write((byte)(0x50 + i), (i * 150 * KiB) + i, 100 * KiB, check: i % 8 == 7);
        }

        Assert.True(Model.RefcountTableClusters(disk.Path) > 1, "the refcount table never grew");
        disk.Verify();
    }

    [SkippableTheory]
    [InlineData("compat=1.1", false)]
    [InlineData("compat=1.1", true)]
    [InlineData("compat=0.10", false)]
    [InlineData("compat=0.10,cluster_size=4096", true)]
    public void WriteZeroes_reads_as_zeros(string options, bool withBacking)
    {
        string path = temp.Combine("zero.qcow2");
        string[] backing = [];
        if (withBacking)
        {
            string basePath = temp.Combine("zero-base.raw");
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "raw", basePath, "4M");
            ExternalTool.RunChecked("qemu-io", "-f", "raw", "-c", "write -P 0x61 0 4M", basePath);
            backing = ["-b", basePath, "-F", "raw"];
        }

        ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", "-o", options, .. backing, path, "4M"]);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x62 64k 1M", path);
        var disk = Model.Open(path);
        disk.WriteZeroes(100, 50);
        disk.WriteZeroes(32 * KiB, 512 * KiB);
        disk.WriteZeroes(2 * MiB, 2 * MiB);
        disk.WriteZeroes(0, 4 * MiB);
        disk.Write(0x63, 3 * MiB, 10);
        long before = new FileInfo(path).Length;
        disk.WriteZeroes(0, 4 * MiB);
        if (!withBacking || options.Contains("1.1", StringComparison.Ordinal))
        {
            // Metadata only: no cluster of zeros is stored.
            Assert.Equal(before, new FileInfo(path).Length);
        }
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void DiscardAll_empties_the_active_table_and_keeps_snapshots(bool withBacking)
    {
        string path = temp.Combine("discard.qcow2");
        string[] backing = [];
        if (withBacking)
        {
            string basePath = temp.Combine("discard-base.qcow2");
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", basePath, "4M");
            ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x71 0 3M", basePath);
            backing = ["-b", basePath, "-F", "qcow2"];
        }

        ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", .. backing, path, "4M"]);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x72 0 1M", "-c", "write -z 2M 64k", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "keep", path);
        byte[] atSnapshot = Model.RawOf(path, temp);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x73 512k 1M", path);
        var disk = Model.Open(path);
        disk.DiscardAll();
        Assert.Equal(disk.Backing, Model.RawOf(path, temp));
        disk.Write(0x74, 4000, 200);

        ExternalTool.RunChecked("qemu-img", "snapshot", "-a", "keep", path);
        QemuOracle.AssertCheckClean(path);
        Assert.Equal(atSnapshot, Model.RawOf(path, temp));
    }

    [SkippableFact]
    public void Images_it_cannot_write_are_refused_and_left_alone()
    {
        ExternalTool.Require("qemu-img");
        (string Options, string ErrorId)[] cases =
        [
            ("extended_l2=on,cluster_size=64k", ImageErrorIds.ExtendedL2NotWritable),
            ($"data_file={temp.Combine("data.raw")}", BlockErrorIds.ExternalDataFileNotSupported),
        ];
        foreach ((string options, string errorId) in cases)
        {
            string path = temp.Combine($"refused-{errorId}.qcow2");
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "1M");
            AssertRefused(path, errorId);
        }

        string encrypted = temp.Combine("luks.qcow2");
        ExternalTool.CreateLuksFixture(encrypted, "create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", encrypted, "1M");
        AssertRefused(encrypted, BlockErrorIds.ImageEncrypted);

        string bitmaps = temp.Combine("bitmaps.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", bitmaps, "1M");
        ExternalTool.RunChecked("qemu-img", "bitmap", "--add", bitmaps, "b0");
        AssertRefused(bitmaps, ImageErrorIds.BitmapsNotWritable);

        foreach ((byte bit, string errorId) in new[] { ((byte)1, ImageErrorIds.ImageDirty), ((byte)2, ImageErrorIds.ImageCorrupt) })
        {
            string path = temp.Combine($"flag{bit}.qcow2");
            ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
            {
                stream.Position = 79;
                stream.WriteByte(bit);
            }

            AssertRefused(path, errorId);
        }

        string raw = temp.Combine("disk.raw");
        ImageCreator.Create(raw, new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = MiB });
        AssertRefused(raw, ImageErrorIds.UnsupportedFormat);

        string good = temp.Combine("good.qcow2");
        ImageCreator.Create(good, new ImageCreateOptions { VirtualSize = MiB });
        byte[] before = File.ReadAllBytes(good);
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(good))
        {
            Assert.Equal(BlockErrorIds.RangeOutOfBounds, Assert.Throws<KvmStorageException>(() => writer.Write(MiB - 1, new byte[2])).ErrorId);
            Assert.Equal(BlockErrorIds.RangeOutOfBounds, Assert.Throws<KvmStorageException>(() => writer.Write(-1, new byte[1])).ErrorId);
            Assert.Equal(BlockErrorIds.RangeOutOfBounds, Assert.Throws<KvmStorageException>(() => writer.WriteZeroes(0, MiB + 1)).ErrorId);
            Assert.Equal(MiB, writer.VirtualSize);
            Assert.Equal(64 * KiB, writer.ClusterSize);
        }

        Assert.Equal(before, File.ReadAllBytes(good));
        Assert.Equal(ImageErrorIds.ImageNotFound, Assert.Throws<KvmStorageException>(() => Qcow2DataWriter.Open(temp.Combine("missing.qcow2"))).ErrorId);
    }

    private static void AssertRefused(string path, string errorId)
    {
        byte[] before = File.ReadAllBytes(path);
        KvmStorageException e = Assert.Throws<KvmStorageException>(() => Qcow2DataWriter.Open(path));
        Assert.Equal(errorId, e.ErrorId);
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    /// <summary>An image and the guest bytes it should read, checked against qemu after every step.</summary>
    private sealed class Model
    {
        private readonly string scratch;
        private readonly byte[] expected;

        private Model(string path)
        {
            Path = path;
            scratch = System.IO.Path.GetDirectoryName(path)!;
            expected = RawOf(path, scratch);
            Backing = ImageInspector.Inspect(path).BackingFile is null ? new byte[expected.Length] : BackingView(path);
        }

        public string Path { get; }

        /// <summary>What the image reads once emptied: its backing chain, else zeros.</summary>
        public byte[] Backing { get; }

        public static Model Create(string path, long size, string options)
        {
            ExternalTool.Require("qemu-io");
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
            return new Model(path);
        }

        public static Model Open(string path)
        {
            ExternalTool.Require("qemu-io");
            return new Model(path);
        }

        public static byte[] RawOf(string path, TempDirectory scratch) => RawOf(path, scratch.Path);

        public static byte[] RawOf(string path, string folder)
        {
            string raw = System.IO.Path.Combine(folder, $"view-{Guid.NewGuid():N}.raw");
            ExternalTool.RunChecked("qemu-img", "convert", "-U", "-O", "raw", path, raw);
            byte[] bytes = File.ReadAllBytes(raw);
            File.Delete(raw);
            return bytes;
        }

        public static uint RefcountTableClusters(string path)
        {
            byte[] head = new byte[64];
            using FileStream stream = File.OpenRead(path);
            stream.ReadExactly(head);
            return System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(56));
        }

        public void Write(byte pattern, long offset, int length, bool check = true)
        {
            byte[] data = new byte[length];
            Array.Fill(data, pattern);
            using (Qcow2DataWriter writer = Qcow2DataWriter.Open(Path))
            {
                writer.Write(offset, data);
                writer.Flush();
            }

            data.CopyTo(expected, offset);
            if (check)
            {
                Verify();
                ExternalTool.RunChecked("qemu-io", "-r", "-c", $"read -P {pattern} {offset} {length}", Path);
            }
        }

        /// <summary>
        /// Several writes (pattern 0: zeros) through one writer; closed by Dispose alone when <paramref name="writer"/>
        /// is true, else by Flush and Dispose.
        /// </summary>
        public void Session(bool writer, params (int Pattern, long Offset, int Length)[] steps)
        {
            using (Qcow2DataWriter session = Qcow2DataWriter.Open(Path))
            {
                foreach ((int pattern, long offset, int length) in steps)
                {
                    if (pattern == 0)
                    {
                        session.WriteZeroes(offset, length);
                        Array.Clear(expected, (int)offset, length);
                        continue;
                    }

                    byte[] data = new byte[length];
                    Array.Fill(data, (byte)pattern);
                    session.Write(offset, data);
                    data.CopyTo(expected, offset);
                }

                if (!writer)
                {
                    session.Flush();
                }
            }

            Verify();
        }

        public void WriteZeroes(long offset, int length)
        {
            using (Qcow2DataWriter writer = Qcow2DataWriter.Open(Path))
            {
                writer.WriteZeroes(offset, length);
            }

            Array.Clear(expected, (int)offset, length);
            Verify();
            ExternalTool.RunChecked("qemu-io", "-r", "-c", $"read -P 0 {offset} {length}", Path);
        }

        public void DiscardAll()
        {
            using (Qcow2DataWriter writer = Qcow2DataWriter.Open(Path))
            {
                writer.DiscardAll();
            }

            Backing.CopyTo(expected, 0);
            Verify();
        }

        public void Verify()
        {
            QemuOracle.AssertCheckClean(Path);
            Assert.True(expected.AsSpan().SequenceEqual(RawOf(Path, scratch)), $"the guest view of {Path} differs from the model");
        }

        private byte[] BackingView(string path)
        {
            ImageInfo info = ImageInspector.Inspect(path);
            byte[] view = new byte[expected.Length];
            byte[] below = RawOf(info.FullBackingFile!, scratch);
            below.AsSpan(0, Math.Min(below.Length, view.Length)).CopyTo(view);
            return view;
        }
    }
}
