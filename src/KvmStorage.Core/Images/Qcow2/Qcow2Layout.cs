namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Where each structure of a new qcow2 image goes, in cluster units: header, refcount table, refcount
/// blocks, L1, then (with preallocation) every L2 table and every data cluster in guest order. With one
/// refcount block and no preallocation this is exactly qemu-img create's layout (clusters 0..3). An encrypted
/// image's LUKS header area follows the L1 table, where qemu-img create allocates it.
/// </summary>
internal sealed class Qcow2Layout
{
    private Qcow2Layout()
    {
    }

    public required uint ClusterSize { get; init; }
    public required int ClusterBits { get; init; }
    public required int RefcountBits { get; init; }
    public required ulong L1Size { get; init; }
    public required ulong L1Clusters { get; init; }
    public required ulong RefcountTableClusters { get; init; }
    public required ulong RefcountBlocks { get; init; }
    public required ulong L2Tables { get; init; }
    public required ulong DataClusters { get; init; }

    /// <summary>Bytes of the LUKS header area (0 when not encrypted); it takes whole clusters.</summary>
    public ulong CryptoLength { get; init; }

    public ulong CryptoClusters => CeilDiv(CryptoLength, ClusterSize);

    public ulong RefcountTableOffset => ClusterSize;
    public ulong RefcountBlocksOffset => (1 + RefcountTableClusters) * ClusterSize;
    public ulong L1Offset => RefcountBlocksOffset + (RefcountBlocks * ClusterSize);
    public ulong CryptoOffset => L1Offset + (L1Clusters * ClusterSize);
    public ulong L2Offset => CryptoOffset + (CryptoClusters * ClusterSize);
    public ulong DataOffset => L2Offset + (L2Tables * ClusterSize);

    /// <summary>Clusters carrying refcount 1: everything up to the last data cluster.</summary>
    public ulong TotalClusters => 1 + RefcountTableClusters + RefcountBlocks + L1Clusters + CryptoClusters + L2Tables + DataClusters;

    public static Qcow2Layout Compute(ulong size, int clusterBits, int refcountBits, bool mapAllData, string path, ulong cryptoLength = 0)
    {
        uint clusterSize = 1u << clusterBits;
        ulong l2Entries = clusterSize / 8UL;
        ulong dataClusters = (size >> clusterBits) + ((size & (clusterSize - 1)) != 0 ? 1UL : 0UL);
        ulong l1Size = (dataClusters / l2Entries) + (dataClusters % l2Entries != 0 ? 1UL : 0UL);
        if (l1Size * 8 > Qcow2Header.MaxL1Bytes)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"A {size}-byte image needs an L1 table over qemu's 32 MiB limit; use a larger cluster size.", path);
        }

        ulong l1Clusters = CeilDiv(l1Size * 8, clusterSize);
        ulong l2Tables = mapAllData ? l1Size : 0;
        ulong mapped = mapAllData ? dataClusters : 0;
        ulong perBlock = Qcow2Entries.RefcountsPerBlock(clusterSize, refcountBits);

        (ulong blocks, ulong tableClusters) = RefcountStructure(1 + l1Clusters + CeilDiv(cryptoLength, clusterSize) + l2Tables + mapped, perBlock, clusterSize);

        if (tableClusters * clusterSize > Qcow2Header.MaxRefcountTableBytes)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"A {size}-byte preallocated image needs a refcount table over qemu's 8 MiB limit.", path);
        }

        return new Qcow2Layout
        {
            ClusterSize = clusterSize,
            ClusterBits = clusterBits,
            RefcountBits = refcountBits,
            L1Size = l1Size,
            L1Clusters = l1Clusters,
            RefcountTableClusters = tableClusters,
            RefcountBlocks = blocks,
            L2Tables = l2Tables,
            DataClusters = mapped,
            CryptoLength = cryptoLength,
        };
    }

    /// <summary>
    /// The fixed front of an image whose data and L2 tables are appended afterwards, as qemu-img convert lays out its
    /// output (every later cluster is allocated at the end of the file in the order it is written): header, a refcount
    /// table sized for the fully allocated image, <paramref name="refcountBlocks"/> refcount blocks, then the L1 table.
    /// </summary>
    public static Qcow2Layout ForAppend(Qcow2Layout fullyAllocated, ulong refcountBlocks) => new()
    {
        ClusterSize = fullyAllocated.ClusterSize,
        ClusterBits = fullyAllocated.ClusterBits,
        RefcountBits = fullyAllocated.RefcountBits,
        L1Size = fullyAllocated.L1Size,
        L1Clusters = fullyAllocated.L1Clusters,
        RefcountTableClusters = fullyAllocated.RefcountTableClusters,
        RefcountBlocks = refcountBlocks,
        L2Tables = 0,
        DataClusters = 0,
        CryptoLength = fullyAllocated.CryptoLength,
    };

    /// <summary>
    /// The refcount blocks and refcount table clusters that count <paramref name="otherClusters"/> clusters and themselves:
    /// the refcount structures count themselves, so they grow until they cover everything, themselves included.
    /// </summary>
    public static (ulong Blocks, ulong TableClusters) RefcountStructure(ulong otherClusters, ulong perBlock, ulong clusterSize)
    {
        ulong tableClusters = 1, blocks = 1;
        while (true)
        {
            ulong total = otherClusters + tableClusters + blocks;
            ulong needBlocks = CeilDiv(total, perBlock);
            ulong needTable = CeilDiv(needBlocks * 8, clusterSize);
            if (needBlocks <= blocks && needTable <= tableClusters)
            {
                return (blocks, tableClusters);
            }

            blocks = Math.Max(blocks, needBlocks);
            tableClusters = Math.Max(tableClusters, needTable);
        }
    }

    public static ulong CeilDiv(ulong value, ulong divisor) => (value / divisor) + (value % divisor != 0 ? 1UL : 0UL);
}
