namespace KvmStorage.Core.Images.Convert;

/// <summary>What the writer does with one unit (cluster, grain or 4 KiB block) of a chunk.</summary>
internal enum UnitState : byte
{
    /// <summary>Reads as zeros (or is left to the backing file): nothing is written.</summary>
    Skip,

    /// <summary>Stored as it is, from <see cref="ConvertChunk.Data"/>.</summary>
    Data,

    /// <summary>Stored compressed, from <see cref="ConvertChunk.Payload"/>.</summary>
    Compressed,

    /// <summary>Marked as reading zeros (qcow2 v3 zero flag), so a backing file's data does not show through.</summary>
    ZeroFlag,
}

/// <summary>A run of guest units, read and prepared by a worker, handed to the writer in guest order.</summary>
internal sealed class ConvertChunk
{
    public ConvertChunk(ulong offset, ulong length, int unit, bool explicitZero)
    {
        Offset = offset;
        Length = length;
        Unit = unit;
        ExplicitZero = explicitZero;
        States = new UnitState[(int)((length + (ulong)unit - 1) / (ulong)unit)];
    }

    /// <summary>Guest offset, a multiple of <see cref="Unit"/>.</summary>
    public ulong Offset { get; }

    /// <summary>Guest bytes covered (a whole number of units, the image's last unit possibly clipped to its size).</summary>
    public ulong Length { get; }

    public int Unit { get; }

    /// <summary>The range is a zero extent of an overlay: no data to read, every unit becomes <see cref="UnitState.ZeroFlag"/>.</summary>
    public bool ExplicitZero { get; }

    public UnitState[] States { get; }

    /// <summary>The guest bytes, unit by unit (the last unit padded with zeros); null for explicit zeros.</summary>
    public byte[]? Data { get; set; }

    /// <summary>Compressed payloads, packed; <see cref="PayloadOffsets"/> and <see cref="PayloadLengths"/> locate each unit's.</summary>
    public byte[]? Payload { get; set; }

    public int[]? PayloadOffsets { get; set; }

    public int[]? PayloadLengths { get; set; }

    public int UnitCount => States.Length;

    public ulong UnitOffset(int index) => Offset + ((ulong)index * (ulong)Unit);

    public ReadOnlySpan<byte> UnitData(int index) => Data.AsSpan(index * Unit, Unit);

    public ReadOnlySpan<byte> UnitPayload(int index) => Payload.AsSpan(PayloadOffsets![index], PayloadLengths![index]);

    /// <summary>The runs of consecutive <see cref="UnitState.Data"/> units, in order: the first unit's index and the run's length.</summary>
    public IEnumerable<(int Start, int Count)> DataRuns()
    {
        int i = 0;
        while (i < UnitCount)
        {
            if (States[i] != UnitState.Data)
            {
                i++;
                continue;
            }

            int start = i;
            while (i < UnitCount && States[i] == UnitState.Data)
            {
                i++;
            }

            yield return (start, i - start);
        }
    }
}

/// <summary>Writes one output format from chunks that arrive in guest order.</summary>
internal abstract class ConvertTarget : IDisposable
{
    /// <summary>The allocation unit: a qcow2 cluster, a vmdk grain, or 4 KiB for raw (qemu-img's default -S).</summary>
    public abstract int Unit { get; }

    /// <summary>The per-unit codec, or null when the output is not compressed.</summary>
    public virtual ClusterCompressor? Compressor => null;

    /// <summary>Compressed payloads must be smaller than this to be kept (qcow2: under one cluster).</summary>
    public virtual int CompressLimit => int.MaxValue;

    /// <summary>What an all-zero unit becomes: skipped (the output reads zeros) unless a backing file would show through.</summary>
    public virtual UnitState ZeroUnitState => UnitState.Skip;

    /// <summary>Whether the target can mark ranges as zeros without data (qcow2 v3 overlays).</summary>
    public virtual bool SupportsZeroFlag => false;

    /// <summary>Whether every unit must be written, zeros included (an encrypted file, where a hole reads as noise).</summary>
    public virtual bool WritesEverything => false;

    /// <summary>Last step of a worker on a read chunk, in parallel with other workers (encryption with guest-sector tweaks).</summary>
    public virtual void Prepare(ConvertChunk chunk)
    {
    }

    /// <summary>Lays out whatever must exist before data arrives.</summary>
    public abstract void Begin(CancellationToken cancellationToken);

    public abstract void Write(ConvertChunk chunk);

    /// <summary>Writes the remaining metadata; the header goes last (qcow2.rst ordering: nothing may point at unwritten data).</summary>
    public abstract void Complete(CancellationToken cancellationToken);

    /// <summary>Releases what the target holds beyond the file (an encrypted output's key).</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }
}
