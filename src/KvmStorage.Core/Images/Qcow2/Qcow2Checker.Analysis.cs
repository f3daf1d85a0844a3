using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The analysis of one pass: its state, the order of its steps and its bookkeeping of references and findings.</summary>
internal sealed partial class Qcow2Checker
{
    /// <summary>One pass over the metadata: the references counted, the stored refcounts, what is wrong and how to fix it.</summary>
    private sealed partial class Analysis
    {
        private readonly Qcow2Checker owner;
        private readonly ulong cs;
        private readonly int bits;
        private readonly bool hasDataFile;
        private readonly ulong nbClusters;
        private uint[] refs;
        private ulong progressDone;
        private ulong progressTotal;

        public Analysis(Qcow2Checker owner, Qcow2Header header, ulong fileLength)
        {
            this.owner = owner;
            Header = header;
            FileLength = fileLength;
            cs = header.ClusterSize;
            bits = header.ClusterBits;
            hasDataFile = (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0;
            nbClusters = Qcow2Layout.CeilDiv(fileLength, cs);
            if (nbClusters >= int.MaxValue)
            {
                throw ImageErrors.NotSupported(ImageErrorIds.ImageTooLarge, owner.path, "the file has too many clusters to check.");
            }

            refs = new uint[nbClusters + 1];
            CompareClusters = nbClusters;
            PerBlock = Qcow2Entries.RefcountsPerBlock(header.ClusterSize, header.RefcountBits);
            RefTable = [];
        }

        public Qcow2Header Header { get; }

        public ulong FileLength { get; }

        public ulong PerBlock { get; }

        public ulong Corruptions { get; private set; }

        public ulong Leaks { get; private set; }

        public ulong CheckErrors { get; private set; }

        public bool Rebuild { get; private set; }

        public bool RefcountMismatch { get; private set; }

        public ulong HighestCluster { get; private set; }

        public ulong Allocated { get; private set; }

        public ulong Fragmented { get; private set; }

        public ulong Compressed { get; private set; }

        public ulong CompareClusters { get; private set; }

        public ulong ReferenceCount => (ulong)refs.LongLength;

        public List<ImageCorruption> Findings { get; } = [];

        /// <summary>File offset of an 8-byte entry → the value that makes it valid (Repair All, step 1).</summary>
        public Dictionary<ulong, ulong> StructuralFixes { get; } = [];

        /// <summary>File offset of an active L1/L2 entry → the value with the right copied flag.</summary>
        public Dictionary<ulong, ulong> CopiedFixes { get; } = [];

        public ulong[] RefTable { get; private set; }

        public Dictionary<ulong, byte[]?> Blocks { get; } = [];

        public ulong Reference(ulong cluster) => cluster < (ulong)refs.LongLength ? refs[cluster] : 0;

        public void Run(byte[] head, bool countRefcountStructures)
        {
            List<(ulong L1Offset, uint L1Size, string Name)> snapshots = ReadSnapshots(out ulong snapshotsSize);
            progressTotal = Header.L1Size + (ulong)snapshots.Sum(s => (long)s.L1Size);

            // qcow2_check_refcounts → calculate_refcounts: header, active L1, snapshots, their table, the refcount
            // table, the encryption header, bitmaps, then the refcount blocks themselves.
            IncRef(0, cs, "header");
            CheckL1(Header.L1TableOffset, Header.L1Size, active: true, "active L1 table");
            if (hasDataFile && snapshots.Count > 0)
            {
                Corruption(Header.SnapshotsOffset, ImageCorruptionKind.InvalidSnapshot, "internal snapshots are not allowed with an external data file.");
            }

            foreach ((ulong l1Offset, uint l1Size, string name) in snapshots)
            {
                if (l1Offset % cs != 0)
                {
                    Corruption(l1Offset, ImageCorruptionKind.InvalidSnapshot, $"snapshot '{name}': L1 table at 0x{l1Offset:x} is not cluster aligned.");
                    continue;
                }

                if ((ulong)l1Size * 8 > Qcow2Header.MaxL1Bytes)
                {
                    Corruption(l1Offset, ImageCorruptionKind.InvalidSnapshot, $"snapshot '{name}': L1 table of {l1Size} entries is too large.");
                    continue;
                }

                CheckL1(l1Offset, l1Size, active: false, $"L1 table of snapshot '{name}'");
            }

            IncRef(Header.SnapshotsOffset, snapshotsSize, "snapshot table");
            if (countRefcountStructures)
            {
                IncRef(Header.RefcountTableOffset, (ulong)Header.RefcountTableClusters * cs, "refcount table");
            }

            CountExtensions(head);
            LoadRefTable();
            CheckRefcountBlocks(countRefcountStructures);
            CompareRefcounts();
            CheckCopiedBits();
        }

        private void Corruption(ulong offset, ImageCorruptionKind kind, string message)
        {
            Corruptions++;
            Add(new ImageCorruption(offset, kind, message));
        }

        private void Add(ImageCorruption finding)
        {
            if (Findings.Count < MaxFindings)
            {
                Findings.Add(finding);
            }
        }

        /// <summary>qemu's <c>qcow2_inc_refcounts_imrt</c>; false when the range lies a cluster or more past the end of the file.</summary>
        private bool IncRef(ulong offset, ulong size, string what)
        {
            if (size == 0)
            {
                return true;
            }

            // The last cluster may be partly written, so up to one cluster past the end is tolerated.
            if (offset >= FileLength + cs || offset + size >= FileLength + cs)
            {
                Corruption(offset, ImageCorruptionKind.PastEndOfFile, $"the {what} at 0x{offset:x} ({size} bytes) lies a cluster or more past the end of the file (0x{FileLength:x}).");
                return false;
            }

            ulong max = Header.RefcountBits >= 32 ? uint.MaxValue : (1UL << Header.RefcountBits) - 1;
            for (ulong k = offset >> bits; k <= (offset + size - 1) >> bits; k++)
            {
                if (k >= (ulong)refs.LongLength)
                {
                    Array.Resize(ref refs, (int)k + 1);
                }

                if (k >= CompareClusters)
                {
                    CompareClusters = k + 1;
                }

                if (refs[k] >= max)
                {
                    Corruption(k * cs, ImageCorruptionKind.RefcountOverflow, $"cluster {k} is referenced more often than a {Header.RefcountBits}-bit refcount can count.");
                    continue;
                }

                refs[k]++;
            }

            return true;
        }

        private void Fix(ulong at, ulong value, bool record)
        {
            if (record)
            {
                StructuralFixes[at] = value;
            }
        }

        /// <summary>The entry will read as zeros: a zero cluster (v3), all-zero subclusters (extended L2), or unallocated (v2).</summary>
        private void FixToZero(ulong at, ulong zeroEntry, bool record)
        {
            Fix(at, zeroEntry, record);
            if (Header.ExtendedL2)
            {
                Fix(at + 8, Qcow2Entries.AllSubclustersZero, record);
            }
        }
    }
}
