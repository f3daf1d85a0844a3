using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>The hosted sparse extent header ("KDMV", little-endian after the magic; VMware Virtual Disk Format 1.1).</summary>
internal sealed record VmdkSparseHeader(
    uint Version,
    uint Flags,
    ulong Capacity,
    ulong GrainSize,
    ulong DescriptorOffset,
    ulong DescriptorSize,
    uint GtesPerGt,
    ulong RedundantGdOffset,
    ulong GdOffset,
    ulong OverHead,
    ushort CompressAlgorithm)
{
    public const uint Magic = 0x4B444D56; // "KDMV" read big-endian
    public const uint Vmdk3Magic = 0x434F5744; // "COWD"
    public const int Size = 4 + 75 + 2;
    public const ulong GdAtEnd = ulong.MaxValue;
    public const uint FlagNewlineDetect = 1 << 0;
    public const uint FlagRedundantGd = 1 << 1;
    public const uint FlagCompressed = 1 << 16;
    public const uint FlagMarkers = 1 << 17;
    public const ushort CompressDeflate = 1;

    /// <summary>Parses a header whose magic is at <paramref name="sector"/>[0].</summary>
    public static VmdkSparseHeader Parse(ReadOnlySpan<byte> sector) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(sector[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[12..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[20..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[28..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[36..]),
        BinaryPrimitives.ReadUInt32LittleEndian(sector[44..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[48..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[56..]),
        BinaryPrimitives.ReadUInt64LittleEndian(sector[64..]),
        BinaryPrimitives.ReadUInt16LittleEndian(sector[77..]));

    /// <summary>Writes the header (magic included) into the first <see cref="Size"/> bytes of <paramref name="sector"/>.</summary>
    public void WriteTo(Span<byte> sector)
    {
        BinaryPrimitives.WriteUInt32BigEndian(sector, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(sector[4..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(sector[8..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[12..], Capacity);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[20..], GrainSize);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[28..], DescriptorOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[36..], DescriptorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(sector[44..], GtesPerGt);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[48..], RedundantGdOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[56..], GdOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(sector[64..], OverHead);
        sector[72] = 0; // uncleanShutdown
        // The newline-detection check characters let readers spot FTP text-mode corruption.
        sector[73] = (byte)'\n';
        sector[74] = (byte)' ';
        sector[75] = (byte)'\r';
        sector[76] = (byte)'\n';
        BinaryPrimitives.WriteUInt16LittleEndian(sector[77..], CompressAlgorithm);
    }
}
