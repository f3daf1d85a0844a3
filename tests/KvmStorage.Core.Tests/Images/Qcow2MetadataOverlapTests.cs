using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Tests.Support;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// The engine's own overlap check (qemu's qcow2_check_metadata_overlap), exercised directly on the writer, without
/// the checker that the cmdlets run first: images are made natively and one table entry is patched so that a write
/// the writer is asked to make would land on metadata. The write is refused with ImageMetadataOverlap, nothing but the
/// corrupt bit changes (v3; v2 has no feature bits, as in qemu), and the image is then refused as corrupt.
/// </summary>
public sealed class Qcow2MetadataOverlapTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * KiB;
    private const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;
    private const long IncompatibleFeatures = 72;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData("L1", "active L1 table")]
    [InlineData("L2", "active L2 table")]
    [InlineData("refcount table", "refcount table")]
    [InlineData("refcount block", "refcount block")]
    [InlineData("snapshot table", "snapshot table")]
    [InlineData("snapshot L1", "inactive L1 table")]
    public void Guest_data_onto_metadata_is_refused_and_the_image_marked_corrupt(string kind, string described)
    {
        string path = Crafted(kind, "1.1");
        byte[] before = File.ReadAllBytes(path);

        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            KvmStorageException e = Assert.Throws<KvmStorageException>(() => writer.Write(0, Filled(0x22, 64 * KiB)));
            Assert.Equal(ImageErrorIds.MetadataOverlap, e.ErrorId);
            Assert.Contains(described, e.Message, StringComparison.Ordinal);

            // The writer does not go on after a refusal.
            Assert.Equal(ImageErrorIds.ImageWriteFailed, Assert.Throws<KvmStorageException>(() => writer.Write(0, Filled(0x22, 512))).ErrorId);
        }

        AssertOnlyCorruptBitSet(before, File.ReadAllBytes(path));
        Assert.Equal(ImageErrorIds.ImageCorrupt, Assert.Throws<KvmStorageException>(() => Qcow2DataWriter.Open(path)).ErrorId);
    }

    [Fact]
    public void A_v2_image_is_refused_unchanged_because_it_has_no_corrupt_bit()
    {
        string path = Crafted("L1", "0.10");
        byte[] before = File.ReadAllBytes(path);
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            Assert.Equal(ImageErrorIds.MetadataOverlap, Assert.Throws<KvmStorageException>(() => writer.Write(0, Filled(0x22, 64 * KiB))).ErrorId);
        }

        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void An_L2_update_onto_a_refcount_block_is_refused_before_any_allocation_is_written()
    {
        // The active L1's first entry names the refcount block as its L2 table. Guest cluster 100 reads an entry of 0
        // there (refcounts of clusters past the file's end), so the write allocates a data cluster and must update
        // that "L2 table" in place: the update lands on the refcount block and is refused before anything is written.
        string path = temp.Combine("l2-on-refblock.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 64 * MiB });
        ulong refTable = ReadBE(path, 48);
        ulong refBlock = ReadBE(path, (long)refTable) & OffsetMask;
        ulong l1 = ReadBE(path, 40);
        WriteBE(path, (long)l1, refBlock | (1UL << 63));
        byte[] before = File.ReadAllBytes(path);

        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            KvmStorageException e = Assert.Throws<KvmStorageException>(() => writer.Write(100L * 64 * KiB, Filled(0x44, 64 * KiB)));
            Assert.Equal(ImageErrorIds.MetadataOverlap, e.ErrorId);
            Assert.Contains("refcount block", e.Message, StringComparison.Ordinal);
        }

        AssertOnlyCorruptBitSet(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Sound_images_are_written_and_the_map_follows_new_tables()
    {
        // Writes that allocate L2 tables, refcount blocks and a larger refcount table (512-byte clusters fill them
        // fast) pass the check: the map learns each new table before the next write is checked against it.
        string path = temp.Combine("sound.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 8 * MiB, ClusterSize = 512 });
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            for (int i = 0; i < 8; i++)
            {
                writer.Write(i * (long)MiB, Filled((byte)(i + 1), 256 * KiB));
            }

            writer.Write(0, Filled(0x55, 4 * KiB));
        }

        Assert.Equal(0UL, ReadBE(path, IncompatibleFeatures));
        Assert.Equal(0UL, ImageChecker.Check(path).Errors);
        ImageSnapshots.Create(path, "s1");
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            writer.Write(512, Filled(0x66, 100 * KiB));
        }

        Assert.Equal(0UL, ReadBE(path, IncompatibleFeatures));
        Assert.Equal(0UL, ImageChecker.Check(path).Errors);
    }

    [Fact]
    public void The_map_knows_each_kind_and_what_a_write_may_ignore()
    {
        string path = temp.Combine("map.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 4 * MiB });
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            writer.Write(0, Filled(0x11, 128 * KiB));
        }

        ImageSnapshots.Create(path, "s1");
        ulong l1 = ReadBE(path, 40);
        ulong l2 = ReadBE(path, (long)l1) & OffsetMask;
        ulong refTable = ReadBE(path, 48);
        ulong snapshots = ReadBE(path, 64);
        ulong snapshotL1 = ReadBE(path, (long)snapshots);

        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        ulong length = (ulong)RandomAccess.GetLength(handle);
        byte[] head = new byte[64 * KiB];
        RandomAccess.Read(handle, head, 0);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, length, path);
        Qcow2MetadataMap map = new RefcountEditor(handle, path, header, length).Map;

        Assert.Equal(Qcow2MetadataKind.Header, map.Overlap(100, 8, Qcow2MetadataKind.None).Kind);
        Assert.Equal(Qcow2MetadataKind.None, map.Overlap(72, 8, Qcow2MetadataKind.Header).Kind);
        Assert.Equal(Qcow2MetadataKind.RefcountTable, map.Overlap(refTable + 8, 8, Qcow2MetadataKind.None).Kind);
        Assert.Equal(Qcow2MetadataKind.RefcountBlock, map.Overlap(ReadBE(path, (long)refTable) & OffsetMask, 1, Qcow2MetadataKind.None).Kind);
        Assert.Equal(Qcow2MetadataKind.ActiveL1, map.Overlap(l1, 8, Qcow2MetadataKind.None).Kind);
        Assert.Equal(Qcow2MetadataKind.ActiveL2, map.Overlap(l2 + 64, 8, Qcow2MetadataKind.ActiveL1).Kind);
        Assert.Equal(Qcow2MetadataKind.None, map.Overlap(l2, 64 * KiB, Qcow2MetadataKind.ActiveL2).Kind);
        Assert.Equal(Qcow2MetadataKind.SnapshotTable, map.Overlap(snapshots, 1, Qcow2MetadataKind.None).Kind);
        Assert.Equal(Qcow2MetadataKind.InactiveL1, map.Overlap(snapshotL1, 8, Qcow2MetadataKind.ActiveL1).Kind);

        // A large range is scanned through the map rather than cluster by cluster; past the file nothing is metadata.
        Assert.Equal((Qcow2MetadataKind.RefcountTable, refTable / (64 * KiB)), map.Overlap(1, 1UL << 40, Qcow2MetadataKind.Header));
        Assert.Equal(Qcow2MetadataKind.None, map.Overlap(length + (1UL << 20), 1UL << 30, Qcow2MetadataKind.None).Kind);

        map.Remove(Qcow2MetadataKind.ActiveL2, l2, 64 * KiB);
        Assert.Equal(Qcow2MetadataKind.None, map.Overlap(l2, 64 * KiB, Qcow2MetadataKind.None).Kind);
        map.Add(Qcow2MetadataKind.ActiveL2, l2, 64 * KiB);
        Assert.Equal(Qcow2MetadataKind.ActiveL2, map.Overlap(l2, 1, Qcow2MetadataKind.None).Kind);
    }

    /// <summary>A 4 MiB image whose first guest cluster's L2 entry points at the metadata named by <paramref name="kind"/>.</summary>
    private string Crafted(string kind, string compat)
    {
        string path = temp.Combine($"{kind.Replace(' ', '-')}-{compat}.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 4 * MiB, Compat = compat });
        using (Qcow2DataWriter writer = Qcow2DataWriter.Open(path))
        {
            writer.Write(0, Filled(0x11, 128 * KiB));
        }

        if (kind.StartsWith("snapshot", StringComparison.Ordinal))
        {
            // After the snapshot, a write copies the shared L2 table: the active L1 owns its table again.
            ImageSnapshots.Create(path, "s1");
            using Qcow2DataWriter writer = Qcow2DataWriter.Open(path);
            writer.Write(0, Filled(0x33, 128 * KiB));
        }

        ulong l1 = ReadBE(path, 40);
        ulong l2 = ReadBE(path, (long)l1) & OffsetMask;
        ulong target = kind switch
        {
            "L1" => l1,
            "L2" => l2,
            "refcount table" => ReadBE(path, 48),
            "refcount block" => ReadBE(path, (long)ReadBE(path, 48)) & OffsetMask,
            "snapshot table" => ReadBE(path, 64),
            "snapshot L1" => ReadBE(path, (long)ReadBE(path, 64)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        WriteBE(path, (long)l2, (ReadBE(path, (long)l2) & (1UL << 63)) | target);
        return path;
    }

    private static void AssertOnlyCorruptBitSet(byte[] before, byte[] after)
    {
        Assert.Equal(before.Length, after.Length);
        ulong features = BinaryPrimitives.ReadUInt64BigEndian(after.AsSpan((int)IncompatibleFeatures));
        Assert.Equal(BinaryPrimitives.ReadUInt64BigEndian(before.AsSpan((int)IncompatibleFeatures)) | Qcow2Header.IncompatCorrupt, features);
        BinaryPrimitives.WriteUInt64BigEndian(after.AsSpan((int)IncompatibleFeatures), BinaryPrimitives.ReadUInt64BigEndian(before.AsSpan((int)IncompatibleFeatures)));
        Assert.Equal(before, after);
    }

    private static byte[] Filled(byte value, int length) => Enumerable.Repeat(value, length).ToArray();

    private static ulong ReadBE(string path, long offset)
    {
        using FileStream stream = File.OpenRead(path);
        byte[] buffer = new byte[8];
        stream.Position = offset;
        stream.ReadExactly(buffer);
        return BinaryPrimitives.ReadUInt64BigEndian(buffer);
    }

    private static void WriteBE(string path, long offset, ulong value)
    {
        using FileStream stream = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
        byte[] buffer = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(buffer, value);
        stream.Position = offset;
        stream.Write(buffer);
    }
}
