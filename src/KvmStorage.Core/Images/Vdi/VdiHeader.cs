using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>
/// The fields of a VDI header the engine uses (VirtualBox's VDI header 1.1, little-endian, as qemu's block/vdi.c reads
/// it), and the block map's special entries. Parsed here for the reader, the block reader and the checker.
/// </summary>
internal readonly record struct VdiHeader(
    uint Signature,
    uint Version,
    uint BlockMapOffset,
    uint DataOffset,
    uint SectorSize,
    ulong DiskSize,
    uint BlockSize,
    uint BlockExtra,
    uint BlocksInImage,
    uint BlocksAllocated)
{
    public const int Length = 512;

    /// <summary>Offset of <see cref="BlocksAllocated"/>, where a check reports a wrong count.</summary>
    public const ulong BlocksAllocatedOffset = 0x184;

    /// <summary>A block map entry for a block that was never written: the backing file (or zeros) shows through.</summary>
    public const uint Unallocated = 0xFFFFFFFF;

    /// <summary>A block map entry for a discarded block: it reads as zeros.</summary>
    public const uint Discarded = 0xFFFFFFFE;

    public static VdiHeader Parse(ReadOnlySpan<byte> h) => new(
        Signature: BinaryPrimitives.ReadUInt32LittleEndian(h[0x40..]),
        Version: BinaryPrimitives.ReadUInt32LittleEndian(h[0x44..]),
        BlockMapOffset: BinaryPrimitives.ReadUInt32LittleEndian(h[0x154..]),
        DataOffset: BinaryPrimitives.ReadUInt32LittleEndian(h[0x158..]),
        SectorSize: BinaryPrimitives.ReadUInt32LittleEndian(h[0x168..]),
        DiskSize: BinaryPrimitives.ReadUInt64LittleEndian(h[0x170..]),
        BlockSize: BinaryPrimitives.ReadUInt32LittleEndian(h[0x178..]),
        BlockExtra: BinaryPrimitives.ReadUInt32LittleEndian(h[0x17C..]),
        BlocksInImage: BinaryPrimitives.ReadUInt32LittleEndian(h[0x180..]),
        BlocksAllocated: BinaryPrimitives.ReadUInt32LittleEndian(h[(int)BlocksAllocatedOffset..]));
}
