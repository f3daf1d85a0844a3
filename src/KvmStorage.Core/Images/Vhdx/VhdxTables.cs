using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// The VHDX region table (MS-VHDX 2.2.2, at 192 KiB), metadata table (2.6.1) and BAT entries (2.5.1): the well-known
/// GUIDs and the entries, decoded here once for the reader, the block reader and the checker. Each caller applies its
/// own checks to them.
/// </summary>
internal static class VhdxTables
{
    public const ulong RegionTableOffset = 192 * 1024;
    public const int RegionTableLength = 64 * 1024;
    public const int MetadataTableLength = 64 * 1024;

    /// <summary>The most entries either table may declare.</summary>
    public const int MaxEntries = 2047;

    /// <summary>BAT entry states (the low 3 bits) of payload blocks.</summary>
    public const ulong BlockNotPresent = 0;
    public const ulong BlockUndefined = 1;
    public const ulong BlockZero = 2;
    public const ulong BlockUnmapped = 3;
    public const ulong BlockFullyPresent = 6;
    public const ulong BlockPartiallyPresent = 7;

    public static readonly Guid BatRegion = new("2DC27766-F623-4200-9D64-115E9BFD4A08");
    public static readonly Guid MetadataRegion = new("8B7CA206-4790-4B9A-B8FE-575F050F886E");
    public static readonly Guid FileParameters = new("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
    public static readonly Guid VirtualDiskSize = new("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
    public static readonly Guid Page83Data = new("BECA12AB-B2E6-4523-93EF-C309E000C746");
    public static readonly Guid LogicalSectorSize = new("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
    public static readonly Guid PhysicalSectorSize = new("CDA348C7-445D-4471-9CC9-E9885251C556");
    public static readonly Guid ParentLocator = new("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");

    /// <summary>The entry count a region table declares.</summary>
    public static uint RegionCount(ReadOnlySpan<byte> table) => BinaryPrimitives.ReadUInt32LittleEndian(table[8..]);

    /// <summary>The entry count a metadata table declares.</summary>
    public static ushort MetadataCount(ReadOnlySpan<byte> table) => BinaryPrimitives.ReadUInt16LittleEndian(table[10..]);

    public static ulong BatState(ulong entry) => entry & 7;

    /// <summary>The file offset a BAT entry points at: bits 20..63 count megabytes.</summary>
    public static ulong BatOffset(ulong entry) => (entry >> 20) * 1024 * 1024;

    /// <summary>Payload blocks per sector bitmap block: one sector bitmap block covers 2^23 sectors (MS-VHDX 2.5.1).</summary>
    public static ulong ChunkRatio(ulong logicalSectorSize, ulong blockSize) => (1UL << 23) * logicalSectorSize / blockSize;

    /// <summary>The region table's entries, as many as it declares and its bytes hold (16-byte header, 32-byte entries).</summary>
    public static List<Region> Regions(byte[] table)
    {
        var regions = new List<Region>();
        uint count = RegionCount(table);
        for (int i = 0; i < count && 16 + ((i + 1) * 32) <= table.Length; i++)
        {
            ReadOnlySpan<byte> e = table.AsSpan(16 + (i * 32), 32);
            regions.Add(new Region(
                new Guid(e[..16]),
                BinaryPrimitives.ReadUInt64LittleEndian(e[16..]),
                BinaryPrimitives.ReadUInt32LittleEndian(e[24..]),
                (BinaryPrimitives.ReadUInt32LittleEndian(e[28..]) & 1) != 0));
        }

        return regions;
    }

    /// <summary>The metadata table's entries, as many as it declares and its bytes hold (32-byte header, 32-byte entries).</summary>
    public static List<MetadataItem> MetadataItems(byte[] table)
    {
        var items = new List<MetadataItem>();
        int count = MetadataCount(table);
        for (int i = 0; i < count && 32 + ((i + 1) * 32) <= table.Length; i++)
        {
            ReadOnlySpan<byte> e = table.AsSpan(32 + (i * 32), 32);
            items.Add(new MetadataItem(
                new Guid(e[..16]),
                BinaryPrimitives.ReadUInt32LittleEndian(e[16..]),
                BinaryPrimitives.ReadUInt32LittleEndian(e[20..]),
                (BinaryPrimitives.ReadUInt32LittleEndian(e[24..]) & 4) != 0));
        }

        return items;
    }

    /// <summary>A region: where it lies and whether a reader that does not know it must refuse the file.</summary>
    public readonly record struct Region(Guid Id, ulong Offset, uint Length, bool Required);

    /// <summary>A metadata item: its offset from the start of the metadata region, its length, and whether it is required.</summary>
    public readonly record struct MetadataItem(Guid Id, uint Offset, uint Length, bool Required);
}
