namespace KvmStorage.Core.Images.Block;

/// <summary>A raw image, or a raw region of another format's file: data where the file has data, holes read as zeros.</summary>
internal sealed class RawLayer : ImageLayer
{
    private readonly ulong start;

    public RawLayer(HostFile file, ulong size, ulong start)
        : base(file, size)
    {
        this.start = start;
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        (bool data, ulong length) = File.Probe(start + offset, maxLength);
        return data ? new LayerRun(length, RunKind.Data, start + offset) : new LayerRun(length, RunKind.Zero);
    }

    /// <summary>qemu's raw format hands the question to the file: data or a hole, both at their offset in the file.</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength)
    {
        (bool data, ulong length) = File.Probe(start + offset, maxLength);
        return new LayerStatus(length, Data: data, Zero: !data, OffsetValid: true, Offset: start + offset);
    }
}

/// <summary>A raw region at the start of a file, of <paramref name="dataLength"/> bytes: beyond it, zeros.</summary>
internal sealed class BoundedRawLayer(HostFile file, ulong size, ulong dataLength) : ImageLayer(file, size)
{
    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        if (offset >= dataLength)
        {
            return new LayerRun(maxLength, RunKind.Zero);
        }

        (bool data, ulong length) = File.Probe(offset, Math.Min(maxLength, dataLength - offset));
        return data ? new LayerRun(length, RunKind.Data, offset) : new LayerRun(length, RunKind.Zero);
    }

    /// <summary>qemu's fixed VHD: all data in place, the file's holes reported as zeros beneath it.</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength) =>
        new(maxLength, Data: true, OffsetValid: true, Offset: offset, Recurse: true);
}
