using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// The fields of a VHD footer and dynamic disk header the engine uses (big-endian; Microsoft's Virtual Hard Disk Image
/// Format Specification, as qemu's block/vpc.c reads it), parsed here for the reader, the block reader and the checker.
/// </summary>
internal static class VpcHeaders
{
    /// <summary>The footer (and its copy at offset 0 in dynamic disks) is one sector.</summary>
    public const int FooterLength = 512;

    /// <summary>The dynamic disk header's length.</summary>
    public const int DynamicHeaderLength = 1024;

    /// <summary>Disk type 2: raw data followed by the footer.</summary>
    public const uint TypeFixed = 2;

    /// <summary>Disk type 4: a dynamic disk whose unallocated blocks come from a parent.</summary>
    public const uint TypeDifferencing = 4;

    /// <summary>A block allocation table entry for a block that was never written.</summary>
    public const uint Unallocated = uint.MaxValue;

    public static ReadOnlySpan<byte> Cookie => "conectix"u8;

    public static uint DiskType(ReadOnlySpan<byte> footer) => BinaryPrimitives.ReadUInt32BigEndian(footer[60..]);

    /// <summary>The footer's data offset: where the dynamic disk header lies.</summary>
    public static ulong DynamicHeaderOffset(ReadOnlySpan<byte> footer) => BinaryPrimitives.ReadUInt64BigEndian(footer[16..]);

    /// <summary>Where the block allocation table lies, its entries, and the size of a data block.</summary>
    public static (ulong TableOffset, uint MaxTableEntries, uint BlockSize) ReadDynamicHeader(ReadOnlySpan<byte> header) => (
        BinaryPrimitives.ReadUInt64BigEndian(header[16..]),
        BinaryPrimitives.ReadUInt32BigEndian(header[28..]),
        BinaryPrimitives.ReadUInt32BigEndian(header[32..]));

    /// <summary>The sector bitmap in front of each block's data: a bit per sector, padded to whole sectors.</summary>
    public static ulong BitmapSize(ulong blockSize) => ((blockSize / (8 * 512)) + 511) & ~511UL;
}
