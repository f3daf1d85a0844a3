using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// A new VHD (Microsoft's Virtual Hard Disk Image Format Specification; the layout of qemu's block/vpc.c): a fixed disk
/// is the data followed by the footer; a dynamic one is a copy of the footer, the dynamic disk header, the block
/// allocation table, then 2 MiB blocks (each a sector bitmap and the data) in the order they were allocated, and the
/// footer last. The size is rounded up to the nearest CHS geometry as the specification computes it, unless forced
/// (qemu's force_size), which records the size itself, rounded up to whole MiB as Azure requires.
/// </summary>
internal sealed class VpcLayout
{
    public const uint BlockSize = 2 * 1024 * 1024;
    public const ulong DynamicHeaderOffset = 512;
    public const ulong TableOffset = 3 * 512;

    /// <summary>The largest disk the format describes: 2040 GiB (qemu's VHD_MAX_SECTORS).</summary>
    public const ulong MaxSectors = 0xff000000;

    private const ulong MaxGeometry = 65535UL * 16 * 255;
    private const uint TypeFixed = 2;
    private const uint TypeDynamic = 3;

    // Seconds from the Unix epoch to 2000-01-01 00:00 UTC, the VHD timestamp's origin.
    private const long Epoch2000 = 946684800;

    private VpcLayout(ulong sectors, ushort cylinders, byte heads, byte sectorsPerTrack, bool isFixed)
    {
        Sectors = sectors;
        Cylinders = cylinders;
        Heads = heads;
        SectorsPerTrack = sectorsPerTrack;
        Fixed = isFixed;
        TableEntries = (uint)((VirtualSize + BlockSize - 1) / BlockSize);
        FirstBlockOffset = TableOffset + RoundUp((ulong)TableEntries * 4, 512);
    }

    public ulong Sectors { get; }

    public ulong VirtualSize => Sectors * 512;

    public ushort Cylinders { get; }

    public byte Heads { get; }

    public byte SectorsPerTrack { get; }

    public bool Fixed { get; }

    public uint TableEntries { get; }

    /// <summary>Where a dynamic image's first block (its bitmap) goes: right after the table.</summary>
    public ulong FirstBlockOffset { get; }

    /// <summary>Each block's sector bitmap: one bit per sector, a whole sector.</summary>
    public static ulong BitmapSize => VpcHeaders.BitmapSize(BlockSize);

    /// <summary>The file of an empty image: the data and footer (fixed), or header, table and footer (dynamic).</summary>
    public ulong EmptyLength => Fixed ? VirtualSize + VpcHeaders.FooterLength : FirstBlockOffset + VpcHeaders.FooterLength;

    /// <summary>A dynamic image with every block allocated.</summary>
    public ulong FullLength => Fixed ? EmptyLength : FirstBlockOffset + ((ulong)TableEntries * (BitmapSize + BlockSize)) + VpcHeaders.FooterLength;

    /// <summary>The layout of a new image of at least <paramref name="size"/> bytes.</summary>
    public static VpcLayout For(ulong size, bool isFixed, bool forceSize, string path)
    {
        if (forceSize)
        {
            const ulong Mib = 1024 * 1024;
            ulong rounded = (size + Mib - 1) / Mib * Mib;
            return new VpcLayout(Check(rounded / 512, path), 65535, 16, 255, isFixed);
        }

        // qemu's calculate_rounded_image_size: raise the sector count until a geometry holds it (so a conversion never
        // truncates); a disk beyond what CHS can describe gets the maximal geometry and records its own size.
        ulong wanted = Math.Min(MaxGeometry, (size + 511) / 512);
        (ushort c, byte h, byte s) = (0, 0, 0);
        for (ulong i = 0; wanted > (ulong)c * h * s; i++)
        {
            (c, h, s) = Geometry(wanted + i);
        }

        ulong sectors = (ulong)c * h * s == MaxGeometry ? (size + 511) / 512 : (ulong)c * h * s;
        return new VpcLayout(Check(sectors, path), c, h, s, isFixed);
    }

    /// <summary>The CHS geometry of the VHD specification's appendix ("CHS calculation").</summary>
    public static (ushort Cylinders, byte Heads, byte SectorsPerTrack) Geometry(ulong totalSectors)
    {
        totalSectors = Math.Min(totalSectors, MaxGeometry);
        ulong sectorsPerTrack, heads, cylinderTimesHeads;
        if (totalSectors >= 65535UL * 16 * 63)
        {
            sectorsPerTrack = 255;
            heads = 16;
            cylinderTimesHeads = totalSectors / sectorsPerTrack;
        }
        else
        {
            sectorsPerTrack = 17;
            cylinderTimesHeads = totalSectors / sectorsPerTrack;
            heads = Math.Max(4, (cylinderTimesHeads + 1023) / 1024);
            if (cylinderTimesHeads >= heads * 1024 || heads > 16)
            {
                sectorsPerTrack = 31;
                heads = 16;
                cylinderTimesHeads = totalSectors / sectorsPerTrack;
            }

            if (cylinderTimesHeads >= heads * 1024)
            {
                sectorsPerTrack = 63;
                heads = 16;
                cylinderTimesHeads = totalSectors / sectorsPerTrack;
            }
        }

        return ((ushort)(cylinderTimesHeads / heads), (byte)heads, (byte)sectorsPerTrack);
    }

    /// <summary>The footer (both copies of a dynamic image are this sector).</summary>
    public byte[] Footer(Guid id)
    {
        byte[] f = new byte[VpcHeaders.FooterLength];
        VpcHeaders.Cookie.CopyTo(f);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(8), 2);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(12), 0x00010000);
        BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan(16), Fixed ? ulong.MaxValue : DynamicHeaderOffset);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(24), (uint)Math.Max(0, DateTimeOffset.UtcNow.ToUnixTimeSeconds() - Epoch2000));
        "kvms"u8.CopyTo(f.AsSpan(28));
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(32), 0x00010000);
        "Wi2k"u8.CopyTo(f.AsSpan(36));
        BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan(40), VirtualSize);
        BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan(48), VirtualSize);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(56), Cylinders);
        f[58] = Heads;
        f[59] = SectorsPerTrack;
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(60), Fixed ? TypeFixed : TypeDynamic);
        id.TryWriteBytes(f.AsSpan(68), bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(64), Checksum(f));
        return f;
    }

    /// <summary>The dynamic disk header: where the table is, how many entries it has, the block size.</summary>
    public byte[] DynamicHeader()
    {
        byte[] d = new byte[VpcHeaders.DynamicHeaderLength];
        "cxsparse"u8.CopyTo(d);
        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8), ulong.MaxValue);
        BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(16), TableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(24), 0x00010000);
        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(28), TableEntries);
        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(32), BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(36), Checksum(d));
        return d;
    }

    /// <summary>
    /// Writes a dynamic image's metadata: the table (<paramref name="blocks"/>: each allocated block and the offset of
    /// its bitmap, in block order), the header, then the footer at <paramref name="footerOffset"/> and its copy at 0.
    /// </summary>
    public void WriteDynamicMetadata(SafeFileHandle handle, IReadOnlyList<(ulong Block, ulong Offset)> blocks, ulong footerOffset)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        const int Page = 64 * 1024;
        byte[] page = new byte[Page];
        ulong tableBytes = RoundUp((ulong)TableEntries * 4, 512);
        int next = 0;
        for (ulong at = 0; at < tableBytes; at += Page)
        {
            int n = (int)Math.Min(Page, tableBytes - at);
            page.AsSpan(0, n).Fill(0xFF);
            while (next < blocks.Count && blocks[next].Block * 4 < at + (ulong)n)
            {
                BinaryPrimitives.WriteUInt32BigEndian(page.AsSpan((int)((blocks[next].Block * 4) - at)), checked((uint)(blocks[next].Offset / 512)));
                next++;
            }

            RandomAccess.Write(handle, page.AsSpan(0, n), (long)(TableOffset + at));
        }

        RandomAccess.Write(handle, DynamicHeader(), (long)DynamicHeaderOffset);
        byte[] footer = Footer(Guid.NewGuid());
        RandomAccess.Write(handle, footer, (long)footerOffset);
        RandomAccess.Write(handle, footer, 0);
    }

    /// <summary>The one's complement of the byte sum, the checksum field itself taken as zero (it is zero when called).</summary>
    private static uint Checksum(ReadOnlySpan<byte> structure)
    {
        uint sum = 0;
        foreach (byte b in structure)
        {
            sum += b;
        }

        return ~sum;
    }

    private static ulong Check(ulong sectors, string path) => sectors <= MaxSectors
        ? sectors
        : throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidSize, "A vpc (VHD) image holds at most 2040 GiB.", path);

    private static ulong RoundUp(ulong value, ulong unit) => (value + unit - 1) / unit * unit;
}
