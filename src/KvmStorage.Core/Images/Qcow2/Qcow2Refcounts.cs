using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>Reads and writes one entry of a refcount block (qcow2.rst "Host cluster management"; sub-byte widths pack LSB first).</summary>
internal static class Qcow2Refcounts
{
    public static ulong EntriesPerBlock(uint clusterSize, int refcountBits) => (ulong)clusterSize * 8 / (ulong)refcountBits;

    public static ulong Get(ReadOnlySpan<byte> block, ulong index, int bits)
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

    public static void Set(Span<byte> block, ulong index, int bits, ulong value)
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
}
