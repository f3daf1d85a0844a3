namespace KvmStorage.Core.Pools;

/// <summary>A storage pool as the module reports it: definition, state, and space.</summary>
public sealed class StoragePool
{
    public required string Name { get; init; }

    public required Guid Uuid { get; init; }

    /// <summary>libvirt's name of the pool type (<c>dir</c>, <c>logical</c>, <c>iscsi-direct</c>, …), as the definition spells it.</summary>
    public string Type => PoolType.ToXmlName();

    /// <summary>The type as the engine handles it.</summary>
    internal PoolType PoolType { get; init; }

    /// <summary>libvirt's name of the state (<c>running</c>, <c>inactive</c>, …), as <c>virsh pool-info</c> spells it.</summary>
    public string State => PoolState.ToName();

    /// <summary>The state as the engine handles it.</summary>
    internal PoolState PoolState { get; init; }

    public required bool Autostart { get; init; }

    public required bool Persistent { get; init; }

    /// <summary>The target path as the host sees it (what the XML says), or null for types without one.</summary>
    public string? Path { get; init; }

    /// <summary>Where <see cref="Path"/> lies under the session's host root (equal to Path when the root is <c>/</c>).</summary>
    public string? LocalPath { get; init; }

    public required PoolSource Source { get; init; }

    public required Permissions Permissions { get; init; }

    /// <summary>Bytes of the file system holding the target (0 where it cannot be known offline).</summary>
    public ulong Capacity { get; init; }

    public ulong Allocation { get; init; }

    public ulong Available { get; init; }

    /// <summary>Entries in the target folder that libvirt would list as volumes; null where unknown offline.</summary>
    public int? VolumeCount { get; init; }

    /// <summary>The definition file, under the host root.</summary>
    public string? DefinitionPath { get; init; }

    /// <summary>Which host the pool lives on: <c>offline:/</c>, or a libvirt URI.</summary>
    public required string HostName { get; init; }

    /// <summary>The definition this object was read from.</summary>
    internal PoolDefinition Definition { get; init; } = null!;

    /// <summary>
    /// A copy of the definition with <paramref name="change"/> made, to define this same pool again: its name and
    /// UUID stay (libvirt refuses to redefine a pool's name under another UUID, and a new XML without one would get a
    /// generated UUID), and its target must pass <see cref="PoolTargetRules"/>.
    /// </summary>
    internal PoolDefinition Redefinition(Action<PoolDefinition> change)
    {
        PoolDefinition edited = Definition.Clone();
        change(edited);
        edited.Name = Name;
        edited.Uuid = Uuid;
        PoolTargetRules.Validate(edited);
        return edited;
    }

    public override string ToString() => Name;
}

/// <summary>One entry of a pool listing: the pool, or why its file could not be read.</summary>
public sealed record PoolReadResult(string File, StoragePool? Pool, Exception? Error);

/// <summary>Options for defining a pool.</summary>
public sealed record PoolDefineOptions
{
    /// <summary>Create the target folder (dir pools).</summary>
    public bool Build { get; init; }

    public bool Autostart { get; init; }

    /// <summary>
    /// Start (activate) the pool once defined, as <c>virsh pool-start</c> after <c>pool-define</c>: libvirt creates
    /// volumes only in a running pool. Only a daemon can start a pool; offline the definition is written and the
    /// pool starts when libvirtd does (with <see cref="Autostart"/>).
    /// </summary>
    public bool Start { get; init; }
}
