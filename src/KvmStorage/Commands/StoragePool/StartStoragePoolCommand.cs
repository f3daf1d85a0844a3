using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Start-StoragePool: starts (activates) storage pools, optionally building them first.</summary>
[Cmdlet(VerbsLifecycle.Start, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class StartStoragePoolCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByObject = "ByObject";

    /// <summary>Names of the pools.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [Alias("PoolName")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>The pools as Get-StoragePool emits them.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Pools.StoragePool[] InputObject { get; set; } = [];

    /// <summary>Build the pool's storage first (create a dir pool's folder, format a disk).</summary>
    [Parameter]
    public SwitchParameter Build { get; set; }

    /// <summary>Emit the pool afterwards.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        IEnumerable<string> names = ParameterSetName == ByObject ? InputObject.Select(p => p.Name) : Name;
        foreach (string name in names)
        {
            RunForItem(name, () =>
            {
                Core.Pools.StoragePool pool = KvmHost.GetPool(name);
                if (ShouldProcess($"{pool.Name} ({pool.Type.ToString().ToLowerInvariant()}, {pool.Path ?? pool.Source.ToString()}) on {KvmHost.Name}", "Start the storage pool"))
                {
                    Core.Pools.StoragePool result = KvmHost.StartPool(pool.Name, Build);
                    if (PassThru)
                    {
                        WriteObject(result);
                    }
                }
            });
        }
    }
}
