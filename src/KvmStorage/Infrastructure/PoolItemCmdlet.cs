using System.Management.Automation;
using KvmStorage.Core.Pools;

namespace KvmStorage.Infrastructure;

/// <summary>
/// The base of the cmdlets that act on existing pools one at a time (Set, Remove, Start, Stop, Update): pools given
/// by name or piped from Get-StoragePool, each re-read by name and handled with its own non-terminating error.
/// </summary>
public abstract class PoolItemCmdlet : KvmCmdlet
{
    protected const string ByName = "ByName";
    protected const string ByObject = "ByObject";

    /// <summary>Names of the pools.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [Alias("PoolName")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>The pools as Get-StoragePool emits them.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public StoragePool[] InputObject { get; set; } = [];

    protected sealed override void ProcessRecord()
    {
        IEnumerable<string> names = ParameterSetName == ByObject ? InputObject.Select(p => p.Name) : Name;
        foreach (string name in names)
        {
            RunForItem(name, () => ProcessPool(KvmHost.GetPool(name)));
        }
    }

    /// <summary>Acts on one pool, freshly read from the host.</summary>
    protected abstract void ProcessPool(StoragePool pool);

    /// <summary>How ShouldProcess names a pool: name, type, where it lives and on which host.</summary>
    protected string Describe(StoragePool pool) =>
        $"{pool.Name} ({pool.Type}, {pool.Path ?? pool.Source.ToString()}) on {KvmHost.Name}";
}
