using System.Buffers.Binary;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>Dynamic and differencing VHD: block allocation table entries inside the file, no block used twice.</summary>
internal static class VpcChecker
{
    public static void Walk(AllocationTableCheck check)
    {
        byte[] footer = check.Read(check.FileLength - VpcHeaders.FooterLength, VpcHeaders.FooterLength);
        if (VpcHeaders.DiskType(footer) == VpcHeaders.TypeFixed)
        {
            return;
        }

        byte[] d = check.Read(VpcHeaders.DynamicHeaderOffset(footer), VpcHeaders.DynamicHeaderLength);
        (ulong tableOffset, uint entries, uint blockSize) = VpcHeaders.ReadDynamicHeader(d);
        ulong bitmapSize = VpcHeaders.BitmapSize(blockSize);
        byte[] table = check.Read(tableOffset, (ulong)entries * 4);
        check.Total = entries;
        var owners = new Dictionary<ulong, ulong>();
        var starts = new List<(ulong Start, uint Index)>();
        for (uint i = 0; i < entries; i++)
        {
            uint sector = BinaryPrimitives.ReadUInt32BigEndian(table.AsSpan((int)(i * 4)));
            if (sector == VpcHeaders.Unallocated)
            {
                continue;
            }

            ulong start = (ulong)sector * 512;
            check.Claim(owners, tableOffset + ((ulong)i * 4), start, bitmapSize + blockSize, i, "block");
            starts.Add((start, i));
        }

        // Blocks of one image never overlap: each holds its bitmap and its data.
        starts.Sort();
        for (int k = 1; k < starts.Count; k++)
        {
            if (starts[k].Start != starts[k - 1].Start && starts[k].Start < starts[k - 1].Start + bitmapSize + blockSize)
            {
                check.Corruption(tableOffset + ((ulong)starts[k].Index * 4), ImageCorruptionKind.ClusterUsedTwice, $"block {starts[k].Index} at 0x{starts[k].Start:x} overlaps block {starts[k - 1].Index}.");
            }
        }
    }
}
