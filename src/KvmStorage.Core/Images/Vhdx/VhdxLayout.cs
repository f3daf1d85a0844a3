using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// Where everything of a new VHDX lies and how it is encoded (MS-VHDX 2.1 to 2.6, the layout qemu's vhdx_create uses):
/// the 1 MiB header section (file identifier, two headers, two region tables), a 1 MiB log that is never used (its GUID
/// in the headers is zero, so there is nothing to replay), the BAT, the metadata region, then the payload blocks, all
/// 1 MiB aligned. Logical sectors are 512 bytes, physical sectors 4 KiB (Hyper-V's default).
/// </summary>
internal sealed class VhdxLayout
{
    public const ulong Mib = 1024 * 1024;
    public const ulong MaxVirtualSize = 64UL * 1024 * 1024 * 1024 * 1024;
    public const uint LogicalSectorSize = 512;
    public const uint PhysicalSectorSize = 4096;
    public const ulong LogOffset = Mib;
    public const uint LogLength = (uint)Mib;
    public const ulong BatOffset = LogOffset + LogLength;
    public const uint MetadataLength = (uint)Mib;

    private const ulong Header1Offset = 64 * 1024;
    private const ulong Header2Offset = 128 * 1024;
    private const int HeaderLength = 4096;
    private const ulong RegionTable2Offset = 256 * 1024;
    private const uint FileParameterLeaveBlocksAllocated = 1;
    private const uint MetadataIsVirtualDisk = 2;
    private const uint MetadataIsRequired = 4;

    public VhdxLayout(ulong virtualSize, uint blockSize, bool isFixed)
    {
        VirtualSize = virtualSize;
        BlockSize = blockSize;
        Fixed = isFixed;
        ChunkRatio = VhdxTables.ChunkRatio(LogicalSectorSize, blockSize);
        PayloadBlocks = (virtualSize + blockSize - 1) / blockSize;

        // Non-differencing images carry no sector bitmap blocks, but their BAT still keeps a slot for one after every
        // chunk of payload entries (MS-VHDX 2.5.1); the last chunk's slot is left out.
        BatEntries = PayloadBlocks == 0 ? 0 : PayloadBlocks + ((PayloadBlocks - 1) / ChunkRatio);
        BatLength = Math.Max(Mib, RoundUp(BatEntries * 8, Mib));
        MetadataOffset = BatOffset + BatLength;
        DataOffset = MetadataOffset + MetadataLength;
    }

    public ulong VirtualSize { get; }

    public uint BlockSize { get; }

    public bool Fixed { get; }

    public ulong ChunkRatio { get; }

    public ulong PayloadBlocks { get; }

    public ulong BatEntries { get; }

    public ulong BatLength { get; }

    public ulong MetadataOffset { get; }

    /// <summary>Where payload blocks start; a fixed image holds block n at <c>DataOffset + n × BlockSize</c>.</summary>
    public ulong DataOffset { get; }

    /// <summary>The file's length with no block allocated (dynamic), or with all of them (fixed).</summary>
    public ulong EmptyLength => Fixed ? DataOffset + (PayloadBlocks * BlockSize) : DataOffset;

    /// <summary>The file's length once every block is allocated (qemu-img measure's "fully allocated" of a dynamic image).</summary>
    public ulong FullLength => DataOffset + (PayloadBlocks * BlockSize);

    /// <summary>qemu-img's default block size for a disk of <paramref name="size"/> bytes (block/vhdx.c vhdx_co_create).</summary>
    public static uint DefaultBlockSize(ulong size) => size switch
    {
        > 32UL * 1024 * 1024 * 1024 * 1024 => 64 * (uint)Mib,
        > 100UL * 1024 * 1024 * 1024 => 32 * (uint)Mib,
        > 1024UL * 1024 * 1024 => 16 * (uint)Mib,
        _ => 8 * (uint)Mib,
    };

    /// <summary>The layout of a new image, its options checked: a size up to 64 TiB, a block size of 1 to 256 MiB, a power of two.</summary>
    public static VhdxLayout For(ulong size, uint? blockSize, bool isFixed, string path, Func<string, KvmStorageException> invalid)
    {
        ArgumentNullException.ThrowIfNull(invalid);
        if (size > MaxVirtualSize)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidSize, $"A vhdx image holds at most 64 TiB ({MaxVirtualSize} bytes).", path);
        }

        uint block = blockSize ?? DefaultBlockSize(size);
        if (block < Mib || block > 256 * Mib || !BitOperations.IsPow2(block))
        {
            throw invalid($"The vhdx block size {block} must be a power of two from 1 MiB to 256 MiB.");
        }

        return new VhdxLayout(RoundUp(size, LogicalSectorSize), block, isFixed);
    }

    /// <summary>The BAT slot of payload block <paramref name="block"/>.</summary>
    public ulong BatIndex(ulong block) => block + (block / ChunkRatio);

    /// <summary>A fully present block at <paramref name="fileOffset"/> (1 MiB aligned).</summary>
    public static ulong PresentEntry(ulong fileOffset) => ((fileOffset / Mib) << 20) | VhdxTables.BlockFullyPresent;

    /// <summary>
    /// Writes the BAT (<paramref name="entries"/>: each allocated block and its file offset, in block order), the
    /// metadata region, the region tables, the headers and last the file identifier: everything but the payload. A
    /// fixed image's BAT names every block in place and ignores <paramref name="entries"/>.
    /// </summary>
    public void WriteMetadata(SafeFileHandle handle, IReadOnlyList<(ulong Block, ulong Offset)> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        WriteBat(handle, entries);
        WriteMetadataRegion(handle);
        byte[] regions = RegionTable();
        RandomAccess.Write(handle, regions, (long)VhdxTables.RegionTableOffset);
        RandomAccess.Write(handle, regions, (long)RegionTable2Offset);

        // Two valid headers; the second has the higher sequence number and is the current one (MS-VHDX 2.2.2.1).
        Span<byte> random = stackalloc byte[8];
        System.Security.Cryptography.RandomNumberGenerator.Fill(random);
        ulong sequence = BinaryPrimitives.ReadUInt64LittleEndian(random) >> 2;
        Guid fileWrite = Guid.NewGuid();
        Guid dataWrite = Guid.NewGuid();
        RandomAccess.Write(handle, Header(sequence, fileWrite, dataWrite), (long)Header1Offset);
        RandomAccess.Write(handle, Header(sequence + 1, fileWrite, dataWrite), (long)Header2Offset);

        byte[] identifier = new byte[512];
        "vhdxfile"u8.CopyTo(identifier);
        Encoding.Unicode.GetBytes("KvmStorage", identifier.AsSpan(8));
        RandomAccess.Write(handle, identifier, 0);
    }

    private void WriteBat(SafeFileHandle handle, IReadOnlyList<(ulong Block, ulong Offset)> entries)
    {
        const int Page = 64 * 1024;
        byte[] page = new byte[Page];
        long pageIndex = -1;
        bool dirty = false;

        void Put(ulong slot, ulong value)
        {
            ulong at = slot * 8;
            long index = (long)(at / Page);
            if (index != pageIndex)
            {
                Flush();
                pageIndex = index;
                Array.Clear(page);
            }

            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan((int)(at % Page)), value);
            dirty = true;
        }

        void Flush()
        {
            if (dirty)
            {
                RandomAccess.Write(handle, page, (long)BatOffset + (pageIndex * Page));
                dirty = false;
            }
        }

        // Unallocated blocks stay PAYLOAD_BLOCK_NOT_PRESENT (0), as Hyper-V leaves them: pages without an entry stay holes.
        if (Fixed)
        {
            for (ulong block = 0; block < PayloadBlocks; block++)
            {
                Put(BatIndex(block), PresentEntry(DataOffset + (block * BlockSize)));
            }
        }
        else
        {
            foreach ((ulong block, ulong offset) in entries)
            {
                Put(BatIndex(block), PresentEntry(offset));
            }
        }

        Flush();
    }

    private void WriteMetadataRegion(SafeFileHandle handle)
    {
        const int ItemsOffset = 64 * 1024;
        byte[] table = new byte[ItemsOffset + 64];
        "metadata"u8.CopyTo(table);
        (Guid Id, int Length, uint Flags)[] items =
        [
            (VhdxTables.FileParameters, 8, MetadataIsRequired),
            (VhdxTables.VirtualDiskSize, 8, MetadataIsRequired | MetadataIsVirtualDisk),
            (VhdxTables.Page83Data, 16, MetadataIsRequired | MetadataIsVirtualDisk),
            (VhdxTables.LogicalSectorSize, 4, MetadataIsRequired | MetadataIsVirtualDisk),
            (VhdxTables.PhysicalSectorSize, 4, MetadataIsRequired | MetadataIsVirtualDisk),
        ];
        BinaryPrimitives.WriteUInt16LittleEndian(table.AsSpan(10), (ushort)items.Length);
        int offset = ItemsOffset;
        for (int i = 0; i < items.Length; i++)
        {
            Span<byte> entry = table.AsSpan(32 + (i * 32), 32);
            items[i].Id.TryWriteBytes(entry);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[16..], (uint)offset);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[20..], (uint)items[i].Length);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[24..], items[i].Flags);
            offset += items[i].Length;
        }

        Span<byte> values = table.AsSpan(ItemsOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(values, BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(values[4..], Fixed ? FileParameterLeaveBlocksAllocated : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(values[8..], VirtualSize);
        Guid.NewGuid().TryWriteBytes(values[16..]);
        BinaryPrimitives.WriteUInt32LittleEndian(values[32..], LogicalSectorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(values[36..], PhysicalSectorSize);
        RandomAccess.Write(handle, table, (long)MetadataOffset);
    }

    private byte[] RegionTable()
    {
        byte[] table = new byte[VhdxTables.RegionTableLength];
        "regi"u8.CopyTo(table);
        BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(8), 2);
        WriteRegion(table.AsSpan(16, 32), VhdxTables.BatRegion, BatOffset, (uint)BatLength);
        WriteRegion(table.AsSpan(48, 32), VhdxTables.MetadataRegion, MetadataOffset, MetadataLength);
        SetChecksum(table);
        return table;

        static void WriteRegion(Span<byte> entry, Guid id, ulong offset, uint length)
        {
            id.TryWriteBytes(entry);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[16..], offset);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[24..], length);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[28..], 1);
        }
    }

    private static byte[] Header(ulong sequence, Guid fileWrite, Guid dataWrite)
    {
        byte[] header = new byte[HeaderLength];
        "head"u8.CopyTo(header);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), sequence);
        fileWrite.TryWriteBytes(header.AsSpan(16));
        dataWrite.TryWriteBytes(header.AsSpan(32));

        // Log GUID (48..64) zero: the log is empty. Log version 0, version 1.
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(66), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(68), LogLength);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(72), LogOffset);
        SetChecksum(header);
        return header;
    }

    /// <summary>CRC-32C over the whole structure with its checksum field (bytes 4..8) taken as zero.</summary>
    private static void SetChecksum(byte[] structure)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(structure.AsSpan(4), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(structure.AsSpan(4), Crc32C.Compute(structure));
    }

    private static ulong RoundUp(ulong value, ulong unit) => (value + unit - 1) / unit * unit;
}
