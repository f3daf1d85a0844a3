namespace KvmStorage.Core.Images.Map;

/// <summary>
/// One run of a volume's guest space as <c>qemu-img map --output=json</c> reports it: where it starts and how long it
/// is, whether it holds data and whether it reads as zeros (both: space allocated but reading as zeros), which image of
/// the chain answers for it (<see cref="Depth"/>: 0 the volume, 1 its backing file, …), whether that image allocates it
/// (<see cref="Present"/>), and where the bytes lie in <see cref="File"/> when the format says (<see cref="Offset"/>).
/// </summary>
public sealed record MapExtent
{
    /// <summary>The run as qemu-img map's human format lists it.</summary>
    public override string ToString() => $"{Start}+{Length} {(Data ? "data" : Zero ? "zero" : "unallocated")} depth {Depth}";

    /// <summary>Guest offset in bytes (qemu's <c>start</c>).</summary>
    public required ulong Start { get; init; }

    /// <summary>Bytes in the run (qemu's <c>length</c>).</summary>
    public required ulong Length { get; init; }

    /// <summary>The run holds data (qemu's <c>data</c>); compressed and encrypted data too.</summary>
    public required bool Data { get; init; }

    /// <summary>The run reads as zeros (qemu's <c>zero</c>): a zero cluster, a hole, or space past the end of a shorter backing file.</summary>
    public required bool Zero { get; init; }

    /// <summary>The image of the chain that answers for the run: 0 the volume itself, 1 its backing file, and so on (qemu's <c>depth</c>).</summary>
    public required int Depth { get; init; }

    /// <summary>That image allocates the run (qemu's <c>present</c>); false where the whole chain leaves it unallocated.</summary>
    public required bool Present { get; init; }

    /// <summary>Where the run's bytes start in <see cref="File"/> (qemu's <c>offset</c>); null when the format gives none (compressed, encrypted, zeros).</summary>
    public ulong? Offset { get; init; }

    /// <summary>The file that holds the run's bytes (the volume, a backing file or an extent file), when <see cref="Offset"/> is given; a host path.</summary>
    public string? File { get; init; }

    /// <summary>The volume mapped (its host path, when the map comes through the module's cmdlets).</summary>
    public string? Path { get; init; }

    /// <summary>The run's end, <see cref="Start"/> plus <see cref="Length"/>.</summary>
    public ulong End => Start + Length;
}
