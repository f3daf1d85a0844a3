using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// The qcow2 metadata codec: the bits of L1 and L2 entries (qcow2.rst "Cluster mapping", "Extended L2 Entries"),
/// of refcount table entries and of refcount block entries ("Host cluster management"). Every qcow2 reader and writer
/// decodes and encodes entries here; compressed cluster descriptors are <see cref="CompressedDescriptor"/>.
/// </summary>
internal static class Qcow2Entries
{
    /// <summary>Bits 9..55 of L1 and standard L2 entries: the host offset of an L2 table or a data cluster.</summary>
    public const ulong OffsetMask = 0x00FF_FFFF_FFFF_FE00;

    /// <summary>Bit 0 of a standard L2 entry (version 3): the cluster reads as zeros, whatever its offset says.</summary>
    public const ulong ZeroFlag = 1;

    /// <summary>Bits of an L1 entry that must be zero (qemu's <c>L1E_RESERVED_MASK</c>).</summary>
    public const ulong L1ReservedMask = 0x7F00_0000_0000_01FF;

    /// <summary>Bits of a standard L2 entry that must be zero (qemu's <c>L2E_STD_RESERVED_MASK</c>).</summary>
    public const ulong L2ReservedMask = 0x3F00_0000_0000_01FE;

    /// <summary>Bits 0..8 of a refcount table entry, which must be zero (qemu's <c>REFT_RESERVED_MASK</c>).</summary>
    public const ulong RefcountTableReservedMask = 0x1FF;

    /// <summary>The low half of an extended L2 entry's subcluster bitmap: all 32 subclusters allocated.</summary>
    public const ulong AllSubclustersAllocated = 0xFFFF_FFFF;

    /// <summary>The high half of an extended L2 entry's subcluster bitmap: all 32 subclusters read as zeros.</summary>
    public const ulong AllSubclustersZero = 0xFFFF_FFFF_0000_0000;

    /// <summary>Bits 9..63 of a refcount table entry: the offset of a refcount block.</summary>
    private const ulong RefcountBlockOffsetMask = 0xFFFF_FFFF_FFFF_FE00;

    /// <summary>Bit 63 of L1 and standard L2 entries (qemu's <c>QCOW_OFLAG_COPIED</c>): the cluster's refcount is exactly 1.</summary>
    private const ulong CopiedFlag = 1UL << 63;

    /// <summary>Bit 62 of an L2 entry (qemu's <c>QCOW_OFLAG_COMPRESSED</c>): the rest is a compressed cluster descriptor.</summary>
    private const ulong CompressedFlag = 1UL << 62;

    /// <summary>The host offset an L1 or standard L2 entry points at (0: unallocated).</summary>
    public static ulong HostOffset(ulong entry) => entry & OffsetMask;

    public static bool IsCompressed(ulong entry) => (entry & CompressedFlag) != 0;

    /// <summary>The copied flag: writes may go to the cluster in place, no other table references it.</summary>
    public static bool IsCopied(ulong entry) => (entry & CopiedFlag) != 0;

    /// <summary>The zero flag of a standard (uncompressed) L2 entry.</summary>
    public static bool IsZero(ulong entry) => (entry & ZeroFlag) != 0;

    public static ulong WithCopied(ulong entry, bool copied) => copied ? entry | CopiedFlag : entry & ~CopiedFlag;

    /// <summary>An entry pointing at <paramref name="hostOffset"/>, a cluster no other table references (refcount 1).</summary>
    public static ulong Owned(ulong hostOffset) => hostOffset | CopiedFlag;

    /// <summary>Whether subcluster <paramref name="index"/> of an extended L2 entry's bitmap is allocated.</summary>
    public static bool SubclusterAllocated(ulong bitmap, int index) => ((bitmap >> index) & 1) != 0;

    /// <summary>Whether subcluster <paramref name="index"/> of an extended L2 entry's bitmap reads as zeros.</summary>
    public static bool SubclusterZero(ulong bitmap, int index) => ((bitmap >> (32 + index)) & 1) != 0;

    /// <summary>The refcount block a refcount table entry points at (0: none yet).</summary>
    public static ulong RefcountBlockOffset(ulong entry) => entry & RefcountBlockOffsetMask;

    /// <summary>Refcount entries in one refcount block.</summary>
    public static ulong RefcountsPerBlock(uint clusterSize, int refcountBits) => (ulong)clusterSize * 8 / (ulong)refcountBits;

    /// <summary>Reads entry <paramref name="index"/> of a refcount block of <paramref name="bits"/>-bit entries (sub-byte widths pack LSB first).</summary>
    public static ulong ReadRefcount(ReadOnlySpan<byte> block, ulong index, int bits)
    {
        switch (bits)
        {
            case 8: return block[(int)index];
            case 16: return BinaryPrimitives.ReadUInt16BigEndian(block[(int)(index * 2)..]);
            case 32: return BinaryPrimitives.ReadUInt32BigEndian(block[(int)(index * 4)..]);
            case 64: return BinaryPrimitives.ReadUInt64BigEndian(block[(int)(index * 8)..]);
            default:
                ulong bit = index * (ulong)bits;
                return (ulong)(block[(int)(bit / 8)] >> (int)(bit % 8)) & ((1UL << bits) - 1);
        }
    }

    /// <summary>Writes entry <paramref name="index"/> of a refcount block of <paramref name="bits"/>-bit entries.</summary>
    public static void WriteRefcount(Span<byte> block, ulong index, int bits, ulong value)
    {
        switch (bits)
        {
            case 8: block[(int)index] = (byte)value; break;
            case 16: BinaryPrimitives.WriteUInt16BigEndian(block[(int)(index * 2)..], (ushort)value); break;
            case 32: BinaryPrimitives.WriteUInt32BigEndian(block[(int)(index * 4)..], (uint)value); break;
            case 64: BinaryPrimitives.WriteUInt64BigEndian(block[(int)(index * 8)..], value); break;
            default:
                ulong bit = index * (ulong)bits;
                int shift = (int)(bit % 8);
                int mask = ((1 << bits) - 1) << shift;
                ref byte b = ref block[(int)(bit / 8)];
                b = (byte)((b & ~mask) | (((int)value << shift) & mask));
                break;
        }
    }

    /// <summary>
    /// qcow2.rst "Compressed Clusters Descriptor" for one cluster size: with x = 62 - (cluster_bits - 8), bits 0..x-1 hold
    /// the host offset of the compressed data (any byte) and bits x..61 the number of 512-byte sectors it touches, minus one.
    /// </summary>
    public readonly struct CompressedDescriptor
    {
        private readonly int sectorsShift;
        private readonly ulong sectorsMask;
        private readonly ulong offsetMask;

        public CompressedDescriptor(int clusterBits)
        {
            sectorsShift = 62 - (clusterBits - 8);
            sectorsMask = (1UL << (clusterBits - 8)) - 1;
            offsetMask = (1UL << sectorsShift) - 1;
        }

        /// <summary>Where the compressed data starts.</summary>
        public ulong HostOffset(ulong entry) => entry & offsetMask;

        /// <summary>The 512-byte sectors the compressed data touches, from the one holding <see cref="HostOffset"/>.</summary>
        public ulong Sectors(ulong entry) => ((entry >> sectorsShift) & sectorsMask) + 1;

        /// <summary>The bytes from <see cref="HostOffset"/> to the end of its last sector: what qemu reads (it may include padding).</summary>
        public ulong Length(ulong entry) => (Sectors(entry) * 512) - (HostOffset(entry) & 511);

        /// <summary>The first and last host cluster the compressed data's sectors touch; each holds a reference for it.</summary>
        public (ulong First, ulong Last) Clusters(ulong entry, ulong clusterSize)
        {
            ulong start = HostOffset(entry) & ~511UL;
            ulong end = start + (Sectors(entry) * 512);
            return (start / clusterSize, (end - 1) / clusterSize);
        }

        /// <summary>The L2 entry of <paramref name="length"/> bytes of compressed data stored at <paramref name="hostOffset"/>.</summary>
        public ulong Encode(ulong hostOffset, int length)
        {
            ulong additionalSectors = ((hostOffset + (ulong)length - 1) >> 9) - (hostOffset >> 9);
            return hostOffset | (additionalSectors << sectorsShift) | CompressedFlag;
        }
    }
}
